//! One thread that does the wake-up thread's work for many channels in loop mode (a server's
//! clients) instead of one thread each (see [`super::wake`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use super::wake::{Waker, WatchState, LIVENESS_INTERVAL};
use crate::error::Error;

/// One thread that does the wake-up thread's work for many channels in loop mode (a server's
/// clients), instead of a thread each. Each channel's event loop sleeps on its own bell, which its
/// peer rings; this thread only takes each channel's loop-mode look ([`Waker::loop_step`]) each
/// interval, and at once when a poll of one of them unparks it. A look that panics breaks its
/// own channel only (its next poll reports the panic) and leaves the group: the others are
/// still watched.
pub struct WakerGroup {
    inner: Arc<GroupInner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct GroupInner {
    members: Mutex<Vec<Member>>,
    stop: AtomicBool,
}

struct Member {
    waker: Waker,
    notify: Box<dyn Fn() + Send>,
    st: WatchState,
}

impl WakerGroup {
    /// Starts the group's thread (named `name`).
    pub fn start(name: &str) -> Result<WakerGroup, Error> {
        let inner = Arc::new(GroupInner {
            members: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let run = inner.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run.run())
            .map_err(|e| Error::Os(format!("cannot start the thread {name}: {e}")))?;
        Ok(WakerGroup {
            inner,
            thread: Some(thread),
        })
    }

    /// Watches `waker`'s channel from now on, calling `notify` as its own wake-up thread would.
    /// The channel must be in loop mode and have had no wake-up thread: else the waker comes back,
    /// to run on a thread of its own.
    pub fn add(&self, waker: Waker, notify: Box<dyn Fn() + Send>) -> Result<(), Waker> {
        let thread = match &self.thread {
            Some(t) => t.thread().clone(),
            None => return Err(waker),
        };
        let sh = &waker.shared;
        if !sh.loop_mode.load(SeqCst) || sh.thread.set(thread.clone()).is_err() {
            return Err(waker);
        }
        self.inner
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Member {
                waker,
                notify,
                st: WatchState::new(),
            });
        thread.unpark();
        Ok(())
    }

    /// How many channels it watches (closed ones go at its next look).
    pub fn len(&self) -> usize {
        self.inner.members.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Does it watch no channel?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GroupInner {
    fn run(&self) {
        while !self.stop.load(SeqCst) {
            {
                let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
                members.retain_mut(|m| !m.waker.shared.stop.load(SeqCst) && m.look());
            }
            std::thread::park_timeout(LIVENESS_INTERVAL);
        }
    }
}

impl Member {
    /// Takes the channel's look; `false` when it panicked: the channel is broken then, and its
    /// driving thread told (see `Shared::wake_work_failed`).
    fn look(&mut self) -> bool {
        let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.waker.loop_step(&mut self.st, &self.notify))) else {
            return true;
        };
        self.waker.shared.wake_work_failed(panic, &self.notify);
        false
    }
}

impl Drop for WakerGroup {
    /// Stops the thread and waits for it; the channels it watched get no more notifications.
    fn drop(&mut self) {
        self.inner.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::channel::{Channel, ChannelOptions};

    /// Two sides of a new channel `name`, the first in loop mode (its event loop took its bell).
    #[cfg(target_os = "linux")]
    fn loop_mode_pair(name: &str) -> (Channel, Channel) {
        let opts = ChannelOptions {
            loop_bell: true,
            ..Default::default()
        };
        let mut a = Channel::open(name, opts.clone()).unwrap();
        let mut b = Channel::open(name, opts).unwrap();
        a.poll().unwrap();
        b.poll().unwrap();
        assert!(a.take_loop_bell().is_some());
        (a, b)
    }

    fn notifier() -> (Box<dyn Fn() + Send>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (
            Box::new(move || {
                let _ = tx.lock().unwrap().send(());
            }),
            rx,
        )
    }

    #[test]
    fn a_channel_not_in_loop_mode_is_handed_back_to_run_on_a_thread_of_its_own() {
        let name = format!("group-refused-{}", std::process::id());
        let a = Channel::open(&name, ChannelOptions::default()).unwrap();
        let group = WakerGroup::start("sharmipc-test-group").unwrap();
        let (notify, _rx) = notifier();
        assert!(group.add(a.waker(), notify).is_err());
        assert!(group.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn one_thread_notifies_each_of_its_channels_of_work_and_lets_go_of_closed_ones() {
        use crate::record::Kind;
        use std::time::Duration;
        let group = WakerGroup::start("sharmipc-test-group").unwrap();
        let mut pairs = Vec::new();
        for i in 0..3 {
            let (a, b) = loop_mode_pair(&format!("group-{}-{i}", std::process::id()));
            let (notify, rx) = notifier();
            assert!(group.add(a.waker(), notify).is_ok());
            pairs.push((a, b, rx));
        }
        assert_eq!(group.len(), 3);
        // A message the event loop was not rung for (nobody watches the bells here): the group
        // notifies that channel, and only it.
        pairs[1].1.send(Kind::Message, 0, 0, b"hello").unwrap();
        pairs[1]
            .2
            .recv_timeout(Duration::from_secs(5))
            .expect("a notification within 5 s");
        assert!(pairs[0].2.try_recv().is_err() && pairs[2].2.try_recv().is_err());
        let batch = pairs[1].0.poll().unwrap();
        assert_eq!(batch.messages.len(), 1);
        // Closed channels leave the group at its next look.
        for (a, _, _) in pairs.iter_mut() {
            a.close();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !group.is_empty() {
            assert!(std::time::Instant::now() < deadline, "closed channels still watched");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_look_that_panics_breaks_its_own_channel_and_the_group_goes_on_watching_the_others() {
        use crate::record::Kind;
        use std::time::Duration;
        let group = WakerGroup::start("sharmipc-test-group").unwrap();
        let (mut bad, mut bad_peer) = loop_mode_pair(&format!("group-panic-{}-0", std::process::id()));
        let (mut good, mut good_peer) = loop_mode_pair(&format!("group-panic-{}-1", std::process::id()));
        let (panicked_tx, panicked) = mpsc::channel();
        let panicked_tx = Mutex::new(panicked_tx);
        let panics: Box<dyn Fn() + Send> = Box::new(move || {
            let _ = panicked_tx.lock().unwrap().send(());
            panic!("a notification that fails");
        });
        assert!(group.add(bad.waker(), panics).is_ok());
        let (notify, notified) = notifier();
        assert!(group.add(good.waker(), notify).is_ok());
        bad_peer.send(Kind::Message, 0, 0, b"to the bad one").unwrap();
        panicked
            .recv_timeout(Duration::from_secs(5))
            .expect("the group looked at the bad channel");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group.len() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the channel whose look panicked is still watched"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = bad.poll().expect_err("the channel whose wake-up work failed is broken");
        assert!(
            err.to_string().contains("a notification that fails"),
            "the error names the panic: {err}"
        );
        // The thread lives on for the other channel.
        good_peer.send(Kind::Message, 0, 0, b"to the good one").unwrap();
        notified
            .recv_timeout(Duration::from_secs(5))
            .expect("the other channel is still notified");
        assert_eq!(good.poll().unwrap().messages.len(), 1);
    }
}

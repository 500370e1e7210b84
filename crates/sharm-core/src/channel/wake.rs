//! The wake-up strategy of the core, all of it: when the wake-up thread spins, sleeps on the
//! doorbell and notifies the driving thread, how the driving thread spins for work by itself
//! (latency mode), how it asks to be rung when it waits for ring space, and how a blocking
//! request waits between looks.
//!
//! The wake-up thread ([`Waker::run`]) never reads or writes records: it only watches the
//! control blocks of the two rings (through [`crate::ring::RingWatch`]), the peer's slot and the
//! flags in [`Shared`]. Its cycle: spin up to `spin` looking for work; if there is some, notify
//! once and wait (parked) until the driving thread polled; else set `reader_asleep` (and
//! `writer_waiting` when the driving thread waits for space), look once more, and sleep on the
//! doorbell for at most [`LIVENESS_INTERVAL`]. Every interval it also checks the segment header
//! (see [`super::header_check`]) and then that the peer's process is alive; it checks the header
//! as well before it notifies of a change of the peer's slot. A header found corrupt breaks the
//! channel (the driving thread's next poll reports it) and nobody is reaped. While the driving
//! thread polls by itself ([`Channel::set_driving`]) the wake-up thread stays parked, so the two
//! do not compete for a core.
//!
//! Many channels in loop mode (a server's clients) can share one such thread instead of a thread
//! each: a [`super::WakerGroup`] takes each one's loop-mode look ([`Waker::loop_step`]).
//!
//! Loop mode (the event loop took this side's [`crate::loop_bell`]): the event loop itself sleeps
//! on its bell, which the peer rings, and the wake-up thread neither spins nor sleeps on the
//! doorbell: it checks the header and the peer's liveness each interval and notifies only of work
//! the event loop has not been rung for (a peer that died, or a record whose ring it missed). The
//! flag `reader_asleep` is then asked for by the driving thread: when it stops polling by itself
//! and at every poll while it does not, each time followed by a look (the poll, or a check in
//! `set_driving`), so a record published before the flag was seen is not missed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::header_check::{HeaderWatch, SlotLook};
use super::peer::{pack_view, unpack_view};
use super::{Channel, Shared};
use crate::error::Error;

/// How often a sleeping side checks whether its peer is still alive.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(100);
/// A notification not answered by a poll within this time is sent again.
const RENOTIFY_AFTER: Duration = Duration::from_millis(500);
/// Spin-loop hints between two looks, on the wake-up thread and on the driving thread.
const WAKER_SPINS: u32 = 32;
const DRIVER_SPINS: u32 = 16;
/// A driving thread's spin of at least this long that found nothing looks whether the peer waits
/// for this thread's core (see [`crate::core_sharing`]).
const MOVE_CHECK_AFTER: Duration = Duration::from_micros(20);

impl Shared {
    /// Is there something for the driving thread to do: records in the incoming ring, space freed
    /// while it waits for some, or a change of the peer's slot since its last poll?
    fn has_work(&self) -> bool {
        if self.broken.load(SeqCst) {
            return false;
        }
        if self.rx_open.load(SeqCst) {
            if self.rx.producer_index() != self.rx_cursor.load(SeqCst) {
                return true;
            }
        } else if self.rx.welcome().0 == self.my_gen {
            return true;
        }
        if self.tx_waiting.load(SeqCst) && self.tx.consumer_index() != self.last_tx_read.load(SeqCst) {
            return true;
        }
        self.peer_view() != self.polled_view()
    }

    /// A part of this channel's wake-up work panicked (`panic`, from `catch_unwind`): the channel
    /// is broken with the panic's message, which its next call reports, and the driving thread is
    /// told (once more through `notify`, which may be what panicked: a second panic is dropped).
    pub(super) fn wake_work_failed(&self, panic: Box<dyn std::any::Any + Send>, notify: &dyn Fn()) {
        let why = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        let _ = self.wake_failed.set(why.to_string());
        self.broken.store(true, SeqCst);
        let _ = catch_unwind(AssertUnwindSafe(notify));
    }

    /// The peer's slot as the driving thread's last poll saw it.
    fn polled_view(&self) -> (bool, u32) {
        unpack_view(self.polled_view.load(SeqCst))
    }

    /// Busy-waits up to `limit` for work, looking every `spins` spin-loop hints. No system call.
    fn spin_for_work(&self, limit: Duration, spins: u32) -> bool {
        let start = Instant::now();
        loop {
            if self.has_work() {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            for _ in 0..spins {
                std::hint::spin_loop();
            }
        }
    }
}

/// The wake-up thread's handle. [`Waker::run`] returns when the channel closes.
pub struct Waker {
    pub(super) shared: Arc<Shared>,
    header: HeaderWatch,
}

impl Waker {
    /// Checks the segment header; if it is corrupt, breaks the channel, notifies the driving
    /// thread (whose next poll reports it) and returns `false`. Also `false` once broken.
    fn header_is_sane(&mut self, notify: &impl Fn()) -> bool {
        let sh = &*self.shared;
        if sh.broken.load(SeqCst) {
            return false;
        }
        if let Some(joined) = sh.join_look.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.header.joined(joined);
        }
        let Err(e) = self.header.look(sh.header()) else {
            return true;
        };
        sh.seg.note_fault(Error::from(e).to_string());
        sh.broken.store(true, SeqCst);
        notify();
        false
    }

    /// The header and the peer's liveness, once an interval.
    fn check_interval(&mut self, st: &mut WatchState, notify: &impl Fn()) {
        let now = Instant::now();
        if now >= st.next_check {
            if self.header_is_sane(notify) {
                self.header.reap_peer_if_dead(self.shared.header());
            }
            st.next_check = now + LIVENESS_INTERVAL;
        }
    }

    /// There is work for the driving thread: notifies it (after a look at the header if the peer's
    /// slot changed since its last poll).
    fn notify_of_work(&mut self, st: &mut WatchState, notify: &impl Fn()) {
        let sh = self.shared.clone();
        if sh.peer_view() != sh.polled_view() && !self.header_is_sane(notify) {
            return;
        }
        st.notified_at = Instant::now();
        sh.notified.store(true, SeqCst);
        notify();
    }

    /// One look in loop mode, where the event loop sleeps on its bell, which the peer rings: the
    /// header and the peer's liveness each interval, a change of the peer's slot at once, and a
    /// notification only of work the event loop was not rung for. The caller then parks for at
    /// most [`LIVENESS_INTERVAL`] (a poll unparks it when it should look again).
    pub(super) fn loop_step(&mut self, st: &mut WatchState, notify: &impl Fn()) {
        let sh = self.shared.clone();
        self.check_interval(st, notify);
        // The event loop was rung for the peer's change; look at the header now, as the first
        // look at a newcomer's slot is what later looks compare with.
        let seen = sh.peer_view();
        if seen != st.looked_at {
            if !self.header_is_sane(notify) {
                return;
            }
            st.looked_at = seen;
        }
        if sh.driving.load(SeqCst) {
            return;
        }
        if sh.notified.load(SeqCst) {
            // The driving thread may be busy for long; if a notification could have been lost,
            // one more costs only an empty poll.
            if st.notified_at.elapsed() >= RENOTIFY_AFTER {
                st.notified_at = Instant::now();
                notify();
            }
            return;
        }
        if sh.has_work() {
            self.notify_of_work(st, notify);
        }
    }

    /// Watches the channel and calls `notify` when the driving thread should poll. After a
    /// notification it waits until that poll happened before it notifies again. If the work
    /// panics, the channel is broken (see [`Shared::wake_work_failed`]).
    pub fn run(mut self, notify: impl Fn()) {
        let shared = self.shared.clone();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| self.watch(&notify))) {
            shared.wake_work_failed(panic, &notify);
        }
    }

    fn watch(&mut self, notify: &impl Fn()) {
        let shared = self.shared.clone();
        let sh = &*shared;
        let _ = sh.thread.set(std::thread::current());
        let mut st = WatchState::new();
        while !sh.stop.load(SeqCst) {
            if sh.loop_mode.load(SeqCst) {
                self.loop_step(&mut st, notify);
                std::thread::park_timeout(LIVENESS_INTERVAL);
                continue;
            }
            self.check_interval(&mut st, notify);
            if sh.driving.load(SeqCst) {
                // The driving thread polls by itself; look only after the peer's liveness.
                std::thread::park_timeout(LIVENESS_INTERVAL);
                continue;
            }
            if sh.notified.load(SeqCst) {
                std::thread::park_timeout(LIVENESS_INTERVAL);
                if sh.notified.load(SeqCst) && st.notified_at.elapsed() >= RENOTIFY_AFTER {
                    st.notified_at = Instant::now();
                    notify();
                }
                continue;
            }
            if sh.spin_for_work(sh.spin, WAKER_SPINS) {
                self.notify_of_work(&mut st, notify);
                continue;
            }
            // Sleep: ask the peer to ring us when it writes (and when it frees space we wait
            // for), then look once more, since it may have acted before it saw the flags.
            sh.rx.set_reader_asleep(true);
            if sh.tx_waiting.load(SeqCst) {
                sh.tx.set_writer_waiting();
            }
            if !sh.has_work() && !sh.stop.load(SeqCst) {
                sh.own_bell.wait(LIVENESS_INTERVAL);
            }
            if !sh.loop_mode.load(SeqCst) {
                sh.rx.set_reader_asleep(false);
            }
        }
    }
}

/// What the wake-up thread remembers of one channel between its looks.
pub(super) struct WatchState {
    /// The peer's slot at the last look at the header for its change.
    looked_at: (bool, u32),
    next_check: Instant,
    notified_at: Instant,
}

impl WatchState {
    pub(super) fn new() -> WatchState {
        WatchState {
            looked_at: (false, u32::MAX),
            next_check: Instant::now(),
            notified_at: Instant::now(),
        }
    }
}

impl Channel {
    /// A handle for the wake-up thread.
    pub fn waker(&self) -> Waker {
        Waker {
            shared: self.shared.clone(),
            header: HeaderWatch::new(self.shared.header(), self.shared.side, self.my_gen),
        }
    }

    /// Says whether the driving thread polls by itself (see [`Channel::spin_for_work`]). While it
    /// does, the wake-up thread does not spin or notify, so the two do not compete for a core;
    /// when it stops, the wake-up thread takes over at once.
    pub fn set_driving(&self, on: bool) {
        let sh = &self.shared;
        if sh.driving.swap(on, SeqCst) == on {
            return;
        }
        if sh.loop_mode.load(SeqCst) {
            // No rings while this thread polls by itself; when it stops, ask for them again and
            // look once more: a record published before the flag was seen rang nobody. Then the
            // wake-up thread notifies (rarely: only in that race).
            self.ask_to_be_rung(!on);
            if !on && sh.has_work() {
                if let Some(t) = sh.thread.get() {
                    t.unpark();
                }
            }
            return;
        }
        if let Some(t) = sh.thread.get() {
            t.unpark();
        }
        if !on {
            sh.own_bell.ring();
        }
    }

    /// Busy-waits up to `limit` on the calling (driving) thread for something for `poll` to do:
    /// records in the incoming ring, ring space for queued messages, or a change of the peer.
    /// Returns whether there is. No system call while it waits.
    pub fn spin_for_work(&mut self, limit: Duration) -> bool {
        self.spin(limit).found
    }

    /// [`Channel::spin_for_work`], saying also whether the spin was crowded out. A spin that waited
    /// at least 20 µs for nothing, or that lost its core to another thread meanwhile, looks
    /// ([`crate::core_sharing`]) whether the peer waits
    /// for this thread's core while another idles (this thread then moves), or whether no core is
    /// free at all: then spinning holds a core that another thread waits for, and the spin is
    /// `crowded`. It says too whether a message of this side's rang the peer since the last spin
    /// (`woke_peer`).
    pub fn spin(&mut self, limit: Duration) -> Spin {
        let woke_peer = std::mem::take(&mut self.woke_peer);
        let sh = &self.shared;
        let mut found = sh.has_work();
        let mut lost = false;
        if !found && !limit.is_zero() {
            let preempted = crate::core_sharing::times_preempted();
            found = sh.spin_for_work(limit, DRIVER_SPINS);
            lost = if found {
                preempted.is_some() && crate::core_sharing::times_preempted() != preempted
            } else {
                limit >= MOVE_CHECK_AFTER
            };
        }
        let crowded = lost && {
            let peer = sh.header().slots[1 - sh.side].pid.load(SeqCst);
            crate::core_sharing::after_lost_spin(peer) == crate::core_sharing::Look::Full
        };
        Spin {
            found,
            crowded,
            woke_peer,
        }
    }

    /// Runs a poll. The wake-up thread waits for one only after it notified, and not at all while
    /// the driving thread polls by itself: it is woken only then (a wake is a system call).
    pub(super) fn polling<T>(&mut self, poll: impl FnOnce(&mut Self) -> T) -> T {
        if self.shared.loop_mode.load(SeqCst) && !self.shared.driving.load(SeqCst) {
            // The event loop sleeps on its bell after this poll, which is the look that follows.
            self.ask_to_be_rung(true);
        }
        let was_notified = self.shared.notified.swap(false, SeqCst);
        let peer_before = self.peer.seen;
        let r = poll(self);
        if self.peer.seen != peer_before && self.peer.seen.0 {
            // A newcomer: its slot as this side first sees it, before acting on its arrival.
            let look = SlotLook::read(self.shared.header(), 1 - self.shared.side);
            if let Some(look) = look.filter(|l| l.gen == self.peer.seen.1) {
                *self.shared.join_look.lock().unwrap_or_else(|e| e.into_inner()) = Some(look);
            }
        }
        // What the wake-up thread compares the slot with from now on (a change it missed while it
        // was parked, such as a peer that came and went, still differs from this).
        self.shared.polled_view.store(pack_view(self.peer.seen), SeqCst);
        // In loop mode the peer's rings do not wake the wake-up thread: wake it when the peer
        // changed, so that it takes note of the newcomer's slot at once (see `header_check`).
        let peer_changed = self.peer.seen != peer_before && self.shared.loop_mode.load(SeqCst);
        if was_notified && !self.shared.driving.load(SeqCst) || peer_changed {
            if let Some(t) = self.shared.thread.get() {
                t.unpark();
            }
        }
        r
    }

    /// Asks the peer to ring (its next publish, and its next release if we wait for space), or
    /// says not to.
    fn ask_to_be_rung(&self, ring: bool) {
        let sh = &self.shared;
        sh.rx.set_reader_asleep(ring);
        if ring && sh.tx_waiting.load(SeqCst) {
            sh.tx.set_writer_waiting();
        }
        // The look that follows must not be ordered before the flag (store-load: Dekker).
        std::sync::atomic::fence(SeqCst);
    }

    /// Hands this side's event-loop bell to the caller, which watches its fd for reading from now
    /// on and polls whenever it is readable: loop mode (see the module notes). `None` without a
    /// bell (not asked for in [`super::ChannelOptions`], not on this platform, or not made) or
    /// when already taken.
    pub fn take_loop_bell(&mut self) -> Option<i32> {
        let fd = self.own_loop_bell.as_mut()?.take_fd()?;
        let sh = &self.shared;
        sh.loop_mode.store(true, SeqCst);
        if !sh.driving.load(SeqCst) {
            self.ask_to_be_rung(true);
        }
        // The wake-up thread may sleep on the doorbell: it switches at its next turn.
        sh.own_bell.ring();
        if let Some(t) = sh.thread.get() {
            t.unpark();
        }
        Some(fd)
    }

    /// Rings the peer: its event-loop bell if it has one, and its doorbell (no system call when
    /// the peer does not sleep on it: its word stays rung).
    pub(super) fn ring_peer(&mut self) {
        let sh = &*self.shared;
        let (_, gen) = sh.peer_view();
        self.peer_loop_bell.ring(sh.seg.os_id(), 1 - sh.side, gen);
        sh.peer_bell.ring();
    }

    /// Tells the wake-up thread whether the driving thread waits for ring space; if it does, asks
    /// the reader to ring when it frees some.
    pub(super) fn note_waiting_for_space(&self, waiting: bool) {
        self.shared.last_tx_read.store(self.tx.consumer_index(), SeqCst);
        self.shared.tx_waiting.store(waiting, SeqCst);
        if waiting {
            self.tx.ask_for_space();
        }
    }
}

/// What a spin of the driving thread found ([`Channel::spin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spin {
    /// There is work for `poll`.
    pub found: bool,
    /// No core of the machine is free: spinning holds one another thread waits for.
    pub crowded: bool,
    /// Since the last spin, a message of this side's rang the peer, which slept: its next one
    /// comes only after its wake-up.
    pub woke_peer: bool,
}

/// How a blocking request waits between looks at the incoming ring: spin a little, then yield,
/// then nap (growing to 1 ms). The doorbell belongs to the wake-up thread, so this thread does
/// not sleep on it.
#[derive(Default)]
pub(super) struct IdleWait {
    rounds: u32,
}

impl IdleWait {
    /// Something arrived: start over with spinning.
    pub(super) fn reset(&mut self) {
        self.rounds = 0;
    }

    /// Waits once, never longer than `left`.
    pub(super) fn wait(&mut self, left: Duration) {
        self.rounds += 1;
        if self.rounds < 200 {
            std::hint::spin_loop();
        } else if self.rounds < 400 {
            std::thread::yield_now();
        } else {
            let nap = Duration::from_micros(((self.rounds - 400) as u64 * 10).min(1000));
            std::thread::sleep(nap.min(left));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::channel::{Channel, ChannelOptions};
    use crate::record::Kind;

    #[test]
    fn a_wake_up_thread_whose_work_panics_ends_and_its_channel_says_why() {
        let name = format!("wake-panic-{}", std::process::id());
        let mut a = Channel::open(&name, ChannelOptions::default()).unwrap();
        let mut b = Channel::open(&name, ChannelOptions::default()).unwrap();
        a.poll().unwrap();
        b.poll().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waker = a.waker();
        let thread = std::thread::spawn(move || {
            waker.run(move || {
                let _ = tx.send(());
                panic!("a notification that fails");
            })
        });
        b.send(Kind::Message, 0, 0, b"hello").unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("a notification within 5 s");
        thread.join().expect("the thread ends without passing the panic on");
        let err = a.poll().expect_err("the channel whose wake-up work failed is broken");
        assert!(
            err.to_string().contains("a notification that fails"),
            "the error names the panic: {err}"
        );
        assert_eq!(err.code(), "ERR_SHARM_OS");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_spin_says_once_that_a_message_rang_the_sleeping_peer_and_not_when_the_peer_polls_by_itself() {
        let opts = ChannelOptions {
            loop_bell: true,
            ..Default::default()
        };
        let name = format!("wake-woke-{}", std::process::id());
        let mut a = Channel::open(&name, opts.clone()).unwrap();
        let mut b = Channel::open(&name, opts).unwrap();
        a.poll().unwrap();
        b.poll().unwrap();
        a.poll().unwrap();
        // b's event loop sleeps on its bell: its poll asks to be rung.
        assert!(b.take_loop_bell().is_some());
        b.poll().unwrap();
        assert!(!a.spin(Duration::ZERO).woke_peer, "nothing sent yet");
        a.send(Kind::Message, 0, 0, b"wake up").unwrap();
        assert!(a.spin(Duration::ZERO).woke_peer, "the message rang b");
        assert!(!a.spin(Duration::ZERO).woke_peer, "said once");
        // b polls by itself: no ring, so nobody was woken.
        b.set_driving(true);
        b.poll().unwrap();
        a.send(Kind::Message, 0, 0, b"already awake").unwrap();
        assert!(!a.spin(Duration::ZERO).woke_peer, "b was not asleep");
    }
}

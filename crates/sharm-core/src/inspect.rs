//! Looking at channel segments from outside, for diagnostics: [`list`] the segments on this
//! machine, [`inspect`] one (its header and the control blocks of its rings, decoded with the
//! structs of [`crate::layout`] and [`crate::ring`]), and [`clean`] one whose sides are all dead.
//!
//! Reading never attaches and never maps: the header page and the two ring control blocks are
//! read with `pread` into aligned buffers, so a segment truncated meanwhile cannot raise SIGBUS
//! here, and nothing in it changes. What is read is a snapshot: fields may move while they are
//! read. [`clean`] removes a segment the way `Channel::open` removes a stale one: it frees the
//! sides of dead processes, marks the segment dead in its attach word (so that an opener at the
//! same moment waits and then creates it afresh), and unlinks it; a segment with a live side is
//! left alone.
//!
//! Linux only (segments are files under `/dev/shm`); elsewhere these return an error saying so.

use crate::error::Error;
use crate::liveness;

/// Directory that holds the segments (Linux).
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of a segment's file name.
pub const FILE_PREFIX: &str = "sharm.";

/// One side of a segment as found.
#[derive(Debug, Clone)]
pub struct SideInfo {
    pub pid: u32,
    /// `"free"`, `"attaching"`, `"ready"`, `"broken"` or `"unknown(<n>)"`.
    pub state: String,
    pub generation: u32,
    pub start_time: u64,
    /// Is the side held (its attach bit set)?
    pub held: bool,
    /// Is the process in the slot alive (same pid and start time)?
    pub alive: bool,
    /// Can this process see the pid at all? A held side whose pid is not visible belongs to
    /// another PID namespace (a container) or is dead.
    pub pid_visible: bool,
    /// The pid is visible but belongs to a process that started before the recorded one: the
    /// recorded process runs in another PID namespace.
    pub other_namespace: bool,
}

/// One ring's control block as found.
#[derive(Debug, Clone)]
pub struct RingInfo {
    /// Which side writes into it.
    pub from_side: u32,
    pub write: u64,
    pub read: u64,
    pub handed: u64,
    /// Bytes written and not yet released by the reader.
    pub fill: u64,
    pub reader_asleep: bool,
    pub writer_waiting: bool,
}

/// What [`inspect`] found in a segment.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// The channel name, when the file name holds it (long names are hashed).
    pub name: Option<String>,
    /// The OS name (`/sharm.<name>`).
    pub os_id: String,
    pub path: String,
    /// File size now.
    pub bytes: u64,
    /// Does it start with sharmipc's magic bytes (of any version)?
    pub is_sharmipc: bool,
    /// Is it a server's lobby ([`crate::lobby`]; its places are not listed as sides)?
    pub lobby: bool,
    /// Is it a sharmipc segment of this layout and protocol?
    pub magic_ok: bool,
    pub layout_version: u32,
    pub protocol_version: u32,
    pub capacity: u64,
    /// `"pending"`, `"ready"`, `"abandoned"` or `"unknown(<n>)"`.
    pub init_state: String,
    pub attach: u32,
    /// The attach word as words: `side0`, `side1`, `dead`.
    pub flags: Vec<String>,
    pub creator_pid: u32,
    pub sides: Vec<SideInfo>,
    /// Present when the file is long enough to hold both rings.
    pub rings: Vec<RingInfo>,
    /// Milliseconds since the file's status last changed: when its creator sized it (or its mode
    /// was set), in practice its creation.
    pub age_ms: Option<f64>,
    pub uid: u32,
    pub mode: u32,
    /// A lobby's server and clients (`None` for a channel, or a lobby not readable as one).
    pub lobby_summary: Option<crate::lobby::Summary>,
}

impl SegmentInfo {
    /// Does a live process hold a side (of a lobby: the server's place, or a client's)?
    pub fn live(&self) -> bool {
        self.sides.iter().any(|s| s.alive)
            || self
                .lobby_summary
                .is_some_and(|l| l.server_alive || l.clients_alive > 0)
    }
}

/// What [`clean`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleaned {
    Removed,
    /// A live process holds a side: left alone. Says which.
    Live(String),
    /// It is being created or removed by another process right now: left alone.
    Busy,
    /// It is not a sharmipc segment of this version (another version, or something else), whose
    /// holders this version cannot tell: left alone. Says what it is.
    Foreign(String),
}

/// Is `pid` a process this one can see?
pub fn pid_visible(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        pid != 0 && liveness::start_time(pid).is_some()
    }
}

/// How the process recorded in a slot (`pid`, `start_time`) looks from here, when it is not
/// alive: `Some(true)` when the pid belongs to a process that started before it, which pid reuse
/// cannot explain (the recorded process runs in another PID namespace); `Some(false)` when there
/// is no process with that pid (it exited, or runs in another PID namespace); `None` when a
/// later process has the pid (it exited and the pid was reused) or it is alive.
pub fn unseen(pid: u32, start_time: u64) -> Option<bool> {
    if pid == 0 || liveness::is_alive(pid, start_time) {
        return None;
    }
    match liveness::start_time(pid) {
        None if !pid_visible(pid) => Some(false),
        Some(now) if now != 0 && now < start_time => Some(true),
        _ => None,
    }
}

/// Says what [`unseen`] found about side `side`'s process `pid`, for a user.
pub fn describe_unseen(side: usize, pid: u32, certain: bool) -> String {
    let hint = "two processes in different PID namespaces cannot share a channel: \
                in Docker, run both containers with a shared PID namespace (--pid=container:<id>, or --pid=host)";
    if certain {
        format!(
            "side {side} of this channel was held by pid {pid}, which from here is another process that started before it: \
             that process runs in another PID namespace (a container), where it still holds the old segment, \
             which this process took for dead and replaced; {hint}"
        )
    } else {
        format!(
            "side {side} of this channel was held by pid {pid}, which is not visible from here: it exited, or it runs in \
             another PID namespace (a container), where it still holds the old segment, which this process took for dead \
             and replaced; {hint}"
        )
    }
}

/// The OS name of a channel name, or `os_id` itself when given as one (`/sharm.x` or `sharm.x`).
pub fn os_id_of(name_or_os_id: &str) -> Result<String, Error> {
    if let Some(rest) = name_or_os_id.strip_prefix('/') {
        if rest.starts_with(FILE_PREFIX) {
            return Ok(name_or_os_id.to_string());
        }
    }
    if name_or_os_id.starts_with(FILE_PREFIX) && crate::segment::os_id_for(name_or_os_id).is_err() {
        return Ok(format!("/{name_or_os_id}"));
    }
    crate::segment::os_id_for(name_or_os_id)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use crate::layout::{
        ring_offset, segment_bytes, Header, ATTACH_DEAD, ATTACH_SIDE, HEADER_BYTES, INIT_ABANDONED, INIT_PENDING,
        INIT_READY, LAYOUT_VERSION, MAGIC, PROTOCOL_VERSION, SLOT_ATTACHING, SLOT_BROKEN, SLOT_FREE, SLOT_READY,
    };
    use crate::ring::RingControl;
    use std::fs::File;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::atomic::Ordering::SeqCst;

    fn state_name(s: u32) -> String {
        match s {
            SLOT_FREE => "free".into(),
            SLOT_ATTACHING => "attaching".into(),
            SLOT_READY => "ready".into(),
            SLOT_BROKEN => "broken".into(),
            n => format!("unknown({n})"),
        }
    }

    fn init_name(s: u32) -> String {
        match s {
            INIT_PENDING => "pending".into(),
            INIT_READY => "ready".into(),
            INIT_ABANDONED => "abandoned".into(),
            n => format!("unknown({n:#x})"),
        }
    }

    /// Aligned room for the header page.
    #[repr(C, align(4096))]
    struct HeaderPage([u8; HEADER_BYTES]);

    /// Aligned room for a ring control block.
    #[repr(C, align(128))]
    struct ControlBlock([u8; crate::layout::RING_CONTROL_BYTES]);

    pub fn path_of(os_id: &str) -> String {
        format!("{SHM_DIR}{os_id}")
    }

    pub fn list() -> Result<Vec<SegmentInfo>, Error> {
        let dir = std::fs::read_dir(SHM_DIR).map_err(|e| Error::Os(format!("cannot list {SHM_DIR}: {e}")))?;
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            // A side's loop bell (`<segment>@bell-a`) goes with its segment.
            if !file.starts_with(FILE_PREFIX) || file.contains('@') {
                continue;
            }
            // One gone meanwhile, or not readable by this user, is left out of a listing.
            if let Ok(Some(info)) = read(&format!("/{file}")) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.os_id.cmp(&b.os_id));
        Ok(out)
    }

    /// Reads the segment `os_id`; `None` if there is none.
    pub fn read(os_id: &str) -> Result<Option<SegmentInfo>, Error> {
        let path = path_of(os_id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Os(format!("cannot open {path}: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::Os(format!("cannot stat {path}: {e}")))?;
        let bytes = meta.len();
        // The status change time: set when the creator sized the file (and by a chmod).
        let age_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|now| now.as_secs_f64() * 1000.0 - (meta.ctime() as f64 * 1000.0 + meta.ctime_nsec() as f64 / 1e6))
            .map(|ms| ms.max(0.0));
        let name = os_id
            .strip_prefix('/')
            .and_then(|f| f.strip_prefix(FILE_PREFIX))
            .filter(|n| crate::segment::os_id_for(n).ok().as_deref() == Some(os_id))
            .map(str::to_string);
        let mut page = Box::new(HeaderPage([0; HEADER_BYTES]));
        let got = read_at(&file, &mut page.0, 0)?;
        // SAFETY: the buffer is page-aligned and HEADER_BYTES long (more than `Header`); `Header`
        // is all integers (atomics), for which any bytes are valid; bytes past what was read are 0.
        let h: &Header = unsafe { &*(page.0.as_ptr() as *const Header) };
        let is_sharmipc = got >= std::mem::size_of::<Header>() && h.magic.load(SeqCst) == MAGIC;
        let lobby = got >= 8 && h.magic.load(SeqCst) == crate::lobby::LOBBY_MAGIC;
        let magic_ok = is_sharmipc
            && h.layout_version.load(SeqCst) == LAYOUT_VERSION
            && h.protocol_version.load(SeqCst) == PROTOCOL_VERSION;
        let attach = h.attach.load(SeqCst);
        let mut flags = Vec::new();
        for (s, bit) in ATTACH_SIDE.iter().enumerate() {
            if attach & bit != 0 {
                flags.push(format!("side{s}"));
            }
        }
        if attach & ATTACH_DEAD != 0 {
            flags.push("dead".to_string());
        }
        let sides = (0..if lobby { 0 } else { 2 })
            .map(|s| {
                let slot = &h.slots[s];
                let pid = slot.pid.load(SeqCst);
                let start_time = slot.start_time.load(SeqCst);
                SideInfo {
                    pid,
                    state: state_name(slot.state.load(SeqCst)),
                    generation: slot.generation.load(SeqCst),
                    start_time,
                    held: attach & ATTACH_SIDE[s] != 0,
                    alive: pid != 0 && liveness::is_alive(pid, start_time),
                    pid_visible: pid_visible(pid),
                    other_namespace: unseen(pid, start_time) == Some(true),
                }
            })
            .collect();
        let capacity = h.capacity.load(SeqCst);
        let mut rings = Vec::new();
        if magic_ok
            && crate::layout::capacity_is_valid(capacity as usize)
            && bytes >= segment_bytes(capacity as usize) as u64
        {
            for r in 0..2 {
                let mut block = Box::new(ControlBlock([0; crate::layout::RING_CONTROL_BYTES]));
                read_at(&file, &mut block.0, ring_offset(r, capacity as usize) as u64)?;
                // SAFETY: the buffer is 128-aligned and RING_CONTROL_BYTES long, the size of
                // `RingControl` (asserted in `ring`), which is all integers.
                let c: &RingControl = unsafe { &*(block.0.as_ptr() as *const RingControl) };
                let write = c.producer.write.load(SeqCst);
                let read = c.consumer.read.load(SeqCst);
                rings.push(RingInfo {
                    from_side: r as u32,
                    write,
                    read,
                    handed: c.consumer.handed.load(SeqCst),
                    fill: write.saturating_sub(read),
                    reader_asleep: c.consumer.reader_asleep.load(SeqCst) != 0,
                    writer_waiting: c.producer.writer_waiting.load(SeqCst) != 0,
                });
            }
        }
        Ok(Some(SegmentInfo {
            name,
            os_id: os_id.to_string(),
            path,
            bytes,
            is_sharmipc,
            lobby,
            magic_ok,
            layout_version: h.layout_version.load(SeqCst),
            protocol_version: h.protocol_version.load(SeqCst),
            capacity,
            init_state: init_name(h.init_state.load(SeqCst)),
            attach,
            flags,
            creator_pid: h.creator_pid.load(SeqCst),
            sides,
            rings,
            age_ms,
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            lobby_summary: if lobby { crate::lobby::summary(os_id) } else { None },
        }))
    }

    fn read_at(file: &File, buf: &mut [u8], at: u64) -> Result<usize, Error> {
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], at + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Os(format!("cannot read shared memory: {e}"))),
            }
        }
        Ok(done)
    }

    pub fn clean(os_id: &str) -> Result<Cleaned, Error> {
        use crate::segment::{Opened, Segment};
        let Some(info) = read(os_id)? else {
            return Err(Error::Invalid(format!("no segment {}", path_of(os_id))));
        };
        if info.lobby {
            return Ok(match crate::lobby::clean(os_id)? {
                Ok(true) => Cleaned::Removed,
                Ok(false) => Cleaned::Busy,
                Err(holders) => Cleaned::Live(holders),
            });
        }
        if info.live() {
            return Ok(Cleaned::Live(live_holders(&info)));
        }
        if !info.magic_ok {
            // Another version's slots may lie elsewhere: whether a live process holds it cannot
            // be told from here, so it is not touched.
            return Ok(Cleaned::Foreign(if info.is_sharmipc {
                format!(
                    "a sharmipc segment of another version (layout {}, protocol {})",
                    info.layout_version, info.protocol_version
                )
            } else if (info.bytes as usize) < HEADER_BYTES {
                format!("{} bytes long, no header (being created, or truncated)", info.bytes)
            } else {
                "not a sharmipc segment".to_string()
            }));
        }
        let mut seg = match Segment::open(os_id)? {
            Opened::Mapped(s) => s,
            Opened::Missing => return Err(Error::Invalid(format!("no segment {}", path_of(os_id)))),
            Opened::Empty => return Ok(Cleaned::Busy),
        };
        if seg.len() < HEADER_BYTES {
            return Ok(Cleaned::Busy);
        }
        // SAFETY: the mapping is page-aligned and at least HEADER_BYTES long (checked above);
        // `Header` is all atomics; the reference does not outlive `seg`.
        let h: &Header = unsafe { &*(seg.as_ptr() as *const Header) };
        if h.init_state.load(SeqCst) != INIT_READY {
            return Ok(Cleaned::Busy);
        }
        // The same steps as an opener that finds a stale segment.
        crate::channel::reap_dead_sides(h);
        if h.attach.compare_exchange(0, ATTACH_DEAD, SeqCst, SeqCst).is_err() {
            let a = h.attach.load(SeqCst);
            if a & ATTACH_DEAD != 0 {
                return Ok(Cleaned::Busy);
            }
            let again = read(os_id)?;
            return Ok(Cleaned::Live(again.map(|i| live_holders(&i)).unwrap_or_default()));
        }
        if let Err(e) = seg.unlink() {
            // Not ours to remove (another user's, in the sticky /dev/shm): leave it as one nobody
            // holds, which the next open removes or initialises again.
            let _ = h.attach.compare_exchange(ATTACH_DEAD, 0, SeqCst, SeqCst);
            return Err(e);
        }
        Ok(Cleaned::Removed)
    }

    fn live_holders(info: &SegmentInfo) -> String {
        info.sides
            .iter()
            .filter(|s| s.alive)
            .map(|s| format!("pid {}", s.pid))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    fn unsupported() -> Error {
        Error::Os("listing, inspecting and cleaning segments is supported on Linux only".to_string())
    }
    pub fn list() -> Result<Vec<SegmentInfo>, Error> {
        Err(unsupported())
    }
    pub fn read(_os_id: &str) -> Result<Option<SegmentInfo>, Error> {
        Err(unsupported())
    }
    pub fn clean(_os_id: &str) -> Result<Cleaned, Error> {
        Err(unsupported())
    }
}

/// Every segment on this machine that this user can read, by OS name.
pub fn list() -> Result<Vec<SegmentInfo>, Error> {
    imp::list()
}

/// The segment of channel `name` (or OS name), or `None` if there is none.
pub fn inspect(name: &str) -> Result<Option<SegmentInfo>, Error> {
    imp::read(&os_id_of(name)?)
}

/// Removes the segment of channel `name` (or OS name) if no live process holds a side.
pub fn clean(name: &str) -> Result<Cleaned, Error> {
    imp::clean(&os_id_of(name)?)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::{Channel, ChannelOptions};

    #[test]
    fn an_open_channel_is_listed_inspected_and_not_cleaned() {
        let name = format!("inspect-{}", std::process::id());
        let ch = Channel::open(&name, ChannelOptions::default()).unwrap();
        let info = inspect(&name).unwrap().expect("the segment is there");
        assert_eq!(info.name.as_deref(), Some(name.as_str()));
        assert!(info.magic_ok);
        assert_eq!(info.capacity as usize, ch.capacity());
        assert_eq!(info.rings.len(), 2);
        let me = std::process::id();
        assert!(info.sides.iter().any(|s| s.pid == me && s.alive && s.held));
        assert!(list().unwrap().iter().any(|i| i.os_id == info.os_id));
        assert_eq!(clean(&name).unwrap(), Cleaned::Live(format!("pid {me}")));
        drop(ch);
        assert!(inspect(&name).unwrap().is_none(), "the last side out removes it");
    }
}

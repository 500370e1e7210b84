//! The named shared-memory segment of a channel: the one module that talks to `shared_memory`.
//!
//! What we rely on from `shared_memory` 0.12 (see its `unix.rs`):
//! - `create()` does `shm_open(O_CREAT | O_EXCL, 0600)` then `ftruncate` and `mmap`; a second
//!   creator gets `MappingIdExists`. There is a short window in which the object exists with size
//!   0, which `open()` fails to map (mmap of 0 bytes is EINVAL): [`Segment::open`] reports it as
//!   [`Opened::Empty`] and the caller retries.
//! - `open()` maps the whole object (size from `fstat`); a missing name is `MapOpenFailed(ENOENT)`.
//! - The mapping is page-aligned, and the owner's `Drop` unlinks the name, ignoring any error. We
//!   never let it unlink on Unix: ownership is cleared at once, and [`Segment::unlink`] removes the
//!   name itself (`shm_unlink`) when `channel` decided in shared memory that this process is the
//!   one to do it, so that a failure is seen. It does fail: in the sticky `/dev/shm` only the
//!   file's owner (or root) may remove it, and a channel created with a wider `mode` is shared
//!   with other users. `channel` then reuses the segment in place rather than giving up the name.
//! - A segment may be shorter than its header says (anyone with write access can `ftruncate` it):
//!   touching a page past the end raises SIGBUS, so `channel` checks the length before it reads
//!   anything past the header, and [`Segment::grow`] lengthens a short one it holds alone.
//! - `Shmem` is neither `Send` nor `Sync`; the mapping itself is plain memory, so we wrap it.
//! - Windows (its `windows.rs`): the segment is a file mapping backed by a file under
//!   `%TEMP%\shared_memory-rs\`, named like the Unix object. Opening a name whose file is missing
//!   (or cannot be opened) fails with `ERROR_FILE_NOT_FOUND`; a mapping error carries the Win32
//!   code. "Unlinking" renames the file and marks it delete-on-close, so it goes away with the
//!   last handle. The mode of the segment cannot be set there: it is the user's temp directory.
//!
//! Names: a channel name is 1..=128 bytes of `[A-Za-z0-9._-]`. The OS name is `/sharm.<name>`,
//! or, when that would exceed 30 bytes (macOS allows 31 including the slash), `/sharm.` + the
//! first 6 bytes of the name + `.` + 16 hex digits of a 64-bit FNV-1a hash of the whole name.

use std::sync::OnceLock;

use shared_memory::{Shmem, ShmemConf, ShmemError};

use crate::error::Error;

/// OS error codes `shared_memory` reports for "no such segment" and "permission denied".
#[cfg(unix)]
const NOT_FOUND: u32 = libc::ENOENT as u32;
#[cfg(unix)]
const ACCESS_DENIED: u32 = libc::EACCES as u32;
#[cfg(windows)]
const NOT_FOUND: u32 = windows_sys::Win32::Foundation::ERROR_FILE_NOT_FOUND;
#[cfg(windows)]
const ACCESS_DENIED: u32 = windows_sys::Win32::Foundation::ERROR_ACCESS_DENIED;

/// Longest channel name accepted.
pub const MAX_NAME_BYTES: usize = 128;
const MAX_OS_ID_BYTES: usize = 30;

/// A mapped segment.
pub struct Segment {
    shmem: Shmem,
    /// The first fault found in the segment's contents by a thread of this process.
    fault: OnceLock<String>,
}

// SAFETY: the mapping is ordinary memory shared by design; every access to it goes through
// atomics or the SPSC discipline described in `ring`. `Shmem` only lacks Send/Sync because it holds
// raw pointers.
unsafe impl Send for Segment {}
// SAFETY: as above: `&Segment` only hands out the mapping's address and name; what is done with
// the memory is ruled by the atomics and the SPSC discipline, not by this type.
unsafe impl Sync for Segment {}

/// Checks a channel name and returns the OS-level name of its segment.
pub fn os_id_for(name: &str) -> Result<String, Error> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::Invalid(format!(
            "channel name must be 1 to {MAX_NAME_BYTES} bytes long, got {} bytes",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::Invalid(format!(
            "channel name may contain only A-Z a-z 0-9 . _ -, found {c:?} in {name:?}"
        )));
    }
    let plain = format!("/sharm.{name}");
    if plain.len() <= MAX_OS_ID_BYTES {
        return Ok(plain);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("/sharm.{}.{h:016x}", &name[..6]))
}

/// Result of trying to create a segment.
pub enum Created {
    New(Segment),
    Exists,
}

/// What [`Segment::open`] found under a name.
pub enum Opened {
    Mapped(Segment),
    /// Nothing under that name.
    Missing,
    /// An object of 0 bytes: its creator has not sized it yet, or it was truncated.
    Empty,
}

impl Segment {
    fn mapped(shmem: Shmem) -> Segment {
        Segment {
            shmem,
            fault: OnceLock::new(),
        }
    }

    /// Records a fault found in the segment's contents, for every user of this mapping to report
    /// (the first one found is kept).
    pub fn note_fault(&self, what: String) {
        let _ = self.fault.set(what);
    }

    /// The first fault [`Segment::note_fault`] recorded.
    pub fn fault(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    /// Creates the segment exclusively (mode 0600), zero-filled.
    pub fn create(os_id: &str, size: usize) -> Result<Created, Error> {
        match ShmemConf::new().os_id(os_id).size(size).create() {
            Ok(mut shmem) => {
                shmem.set_owner(false);
                Ok(Created::New(Segment::mapped(shmem)))
            }
            Err(ShmemError::MappingIdExists) => Ok(Created::Exists),
            Err(e) => Err(Error::Os(format!(
                "cannot create shared memory {os_id:?} of {size} bytes: {e}"
            ))),
        }
    }

    /// Opens an existing segment and maps all of it (its length is the object's size now).
    pub fn open(os_id: &str) -> Result<Opened, Error> {
        match Self::open_once(os_id) {
            // Its creator sized it between our look at its size (0) and our look after the
            // failed mapping: it can be mapped now.
            Err(SizedMeanwhile) => Self::open_once(os_id).map_err(|SizedMeanwhile| {
                Error::Os(format!(
                    "cannot open shared memory {os_id:?}: mapping it failed with EINVAL twice, although it is not empty"
                ))
            })?,
            Ok(r) => r,
        }
    }

    /// [`Segment::open`], once: `Err(SizedMeanwhile)` if mapping it failed because it was empty and it is
    /// not empty any more.
    fn open_once(os_id: &str) -> Result<Result<Opened, Error>, SizedMeanwhile> {
        Ok(match ShmemConf::new().os_id(os_id).open() {
            Ok(mut shmem) => {
                shmem.set_owner(false);
                Ok(Opened::Mapped(Segment::mapped(shmem)))
            }
            Err(ShmemError::MapOpenFailed(NOT_FOUND)) => Ok(Opened::Missing),
            Err(ShmemError::MapOpenFailed(ACCESS_DENIED)) => Err(Error::Os(format!(
                "permission denied opening shared memory {os_id:?}: it belongs to another user (channels are owner-only)"
            ))),
            Err(ShmemError::MapSizeZero) => Ok(Opened::Empty),
            // On Unix an empty object fails to map (mmap of 0 bytes is EINVAL).
            #[cfg(unix)]
            Err(ShmemError::MapOpenFailed(e)) if e == libc::EINVAL as u32 => match object_size(os_id) {
                Some(0) => Ok(Opened::Empty),
                Some(_) => return Err(SizedMeanwhile),
                None => Err(Error::Os(format!("cannot open shared memory {os_id:?}: mapping it failed (EINVAL)"))),
            },
            Err(e) => Err(Error::Os(format!("cannot open shared memory {os_id:?}: {e}"))),
        })
    }

    /// Makes the object under `os_id` at least `len` bytes long; never shortens it, so a creator
    /// sizing it at the same time loses nothing. Mappings made before keep their length: open it
    /// again to see the new one. Linux only (`fallocate`, which also reserves the memory); on
    /// other platforms an error saying so.
    pub fn grow(os_id: &str, len: usize) -> Result<(), Error> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let path = format!("/dev/shm{os_id}");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::Os(format!("cannot open {path} to lengthen it to {len} bytes: {e}")))?;
            // SAFETY: fallocate only reads its arguments; the descriptor is open for writing.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                return Err(Error::Os(format!("cannot lengthen {path} to {len} bytes: {e}")));
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(Error::Os(format!(
                "shared memory {os_id} is shorter than {len} bytes, and lengthening it in place is not supported on this platform: remove it"
            )))
        }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.shmem.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.shmem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn os_id(&self) -> &str {
        self.shmem.get_os_id()
    }

    /// Where the segment is, for messages: its file on Linux, else its OS name.
    pub fn path(&self) -> String {
        if cfg!(target_os = "linux") {
            format!("/dev/shm{}", self.os_id())
        } else {
            self.os_id().to_string()
        }
    }

    /// The access mode of the segment's file (Linux), `None` elsewhere or if it cannot be read.
    pub fn mode(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(self.path())
                .ok()
                .map(|m| m.permissions().mode() & 0o777)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Sets the access mode of a segment we created (default 0600, owner only).
    pub fn set_mode(&self, mode: u32) -> Result<(), Error> {
        if mode & !0o777 != 0 {
            return Err(Error::Invalid(format!(
                "mode must be a permission mask like 0o660, got {mode:#o}"
            )));
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = format!("/dev/shm{}", self.os_id());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::Os(format!("cannot set mode {mode:#o} on {path}: {e}")))
        }
        #[cfg(not(target_os = "linux"))]
        {
            if mode == 0o600 {
                return Ok(());
            }
            Err(Error::Invalid(format!(
                "mode {mode:#o}: only the default 0o600 is supported on this platform"
            )))
        }
    }

    /// Removes the name when this mapping is dropped (the mapping itself stays valid until then),
    /// ignoring failures. [`Segment::unlink`] reports them.
    pub fn unlink_on_drop(&mut self) {
        self.shmem.set_owner(true);
    }

    /// Removes the name now; the mapping stays valid. A name already gone counts as removed. The
    /// error says why not (e.g. EPERM: another user's file in the sticky `/dev/shm`), with the
    /// path. Call it only when the segment under the name is known to be this one (see `channel`):
    /// it removes whatever the name holds. On Windows the name goes when the last mapping does.
    pub fn unlink(&mut self) -> Result<(), Error> {
        #[cfg(unix)]
        {
            let name = std::ffi::CString::new(self.os_id())
                .map_err(|_| Error::Invalid(format!("shared memory name {:?} contains a NUL", self.os_id())))?;
            // SAFETY: `name` is a NUL-terminated string that outlives the call.
            if unsafe { libc::shm_unlink(name.as_ptr()) } == 0 {
                crate::loop_bell::remove_all(self.os_id());
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                crate::loop_bell::remove_all(self.os_id());
                return Ok(());
            }
            Err(Error::Os(format!("cannot remove shared memory {}: {e}", self.path())))
        }
        #[cfg(windows)]
        {
            self.unlink_on_drop();
            Ok(())
        }
    }
}

/// Size of the shared-memory object `os_id`, if it can be opened.
/// A mapping failed because the object was empty, and it is not any more: open it again.
#[cfg_attr(not(unix), allow(dead_code))]
struct SizedMeanwhile;

#[cfg(unix)]
fn object_size(os_id: &str) -> Option<u64> {
    let name = std::ffi::CString::new(os_id).ok()?;
    // SAFETY: `name` is NUL-terminated; the descriptor returned is closed below.
    let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDONLY, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `stat` is plain data that fstat fills; `fd` is open, and closed once, here.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        let ok = libc::fstat(fd, &mut stat) == 0;
        libc::close(fd);
        ok.then_some(stat.st_size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_and_long_ones_hashed() {
        assert_eq!(os_id_for("orders").unwrap(), "/sharm.orders");
        assert!(os_id_for("").is_err());
        assert!(os_id_for("a/b").unwrap_err().to_string().contains("'/'"));
        assert!(os_id_for(&"x".repeat(129)).is_err());
        let long = os_id_for("a-rather-long-channel-name-for-macos").unwrap();
        assert!(long.len() <= 30, "{long}");
        assert_eq!(long, os_id_for("a-rather-long-channel-name-for-macos").unwrap());
        assert_ne!(long, os_id_for("a-rather-long-channel-name-for-macOS").unwrap());
    }

    /// Opening a segment while its creator makes it never fails: it is missing, empty (not sized
    /// yet) or mapped whole, however the two interleave (the creator may size it between the
    /// opener's look at its size and the failed mapping of 0 bytes).
    #[cfg(unix)]
    #[test]
    fn an_open_racing_the_creator_is_missing_empty_or_mapped() {
        let os_id = format!("/sharm.seg-race-{}", std::process::id());
        for _ in 0..300 {
            let creator = {
                let os_id = os_id.clone();
                std::thread::spawn(move || match Segment::create(&os_id, 4096).unwrap() {
                    Created::New(seg) => seg,
                    Created::Exists => panic!("{os_id} was left over"),
                })
            };
            loop {
                match Segment::open(&os_id).unwrap() {
                    Opened::Missing | Opened::Empty => std::hint::spin_loop(),
                    Opened::Mapped(seg) => {
                        assert_eq!(seg.len(), 4096);
                        break;
                    }
                }
            }
            creator.join().unwrap().unlink().unwrap();
        }
    }
}

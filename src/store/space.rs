//! Room for the data directory: how much of its disk is free, and how much history must give
//! up so that alarms, the push outbox and the uplink queue, which share that disk, can still be
//! written.
//!
//! History is what a hub can best lose: it is the bulk of the disk, the cloud holds a copy of
//! what went up, and its rollups keep the summaries of the readings shed. So when the disk runs
//! low (an SD card filled by logs, a small partition, a capped database), the writer sheds
//! history's oldest readings and gives the pages back to the disk, and the hub raises the
//! storage alarm until there is room again.

use std::io;
use std::path::{Path, PathBuf};

/// How much room history must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Free bytes the disk must keep; below it history sheds.
    pub min_free: u64,
    /// Bytes the history database may hold in use (`None`: only the disk limits it).
    pub max_db: Option<u64>,
}

/// What the writer should do about room now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Bytes of history to give up now (0: none).
    pub shed: u64,
    /// Whether the storage alarm should stand.
    pub low: bool,
}

impl Room {
    pub fn from_mb(min_free_mb: u64, max_db_mb: u64) -> Self {
        const MB: u64 = 1024 * 1024;
        Self {
            min_free: min_free_mb.saturating_mul(MB),
            max_db: (max_db_mb > 0).then(|| max_db_mb.saturating_mul(MB)),
        }
    }

    /// Decides from the disk's free bytes (`None` if unknown), the bytes history holds in use,
    /// whether the last write failed for lack of room, and whether the alarm stands now.
    ///
    /// Shedding goes a quarter past the limit, and the alarm clears only once that much room is
    /// back: a disk hovering at its limit then sheds in steps, not a page per write, and the
    /// alarm does not flap.
    pub fn verdict(&self, free: Option<u64>, db_used: u64, write_full: bool, low: bool) -> Verdict {
        let disk_goal = self.min_free.saturating_add(self.min_free / 4);
        let disk_shed = match free {
            Some(f) if f < self.min_free || (write_full && f < disk_goal) => disk_goal - f,
            _ => 0,
        };
        let db_shed = self.max_db.map_or(0, |max| {
            let goal = max - max / 4;
            if db_used > max || (write_full && db_used > goal) {
                db_used - goal
            } else {
                0
            }
        });
        // A write refused for lack of room with nothing measured short (another process took
        // the space between two looks, or the disk cannot say): give up a slice anyway.
        let blind = if write_full && disk_shed == 0 && db_shed == 0 {
            (db_used / 16).max(1)
        } else {
            0
        };
        let shed = disk_shed.max(db_shed).max(blind);
        let room_back = free.is_none_or(|f| f >= disk_goal)
            && self.max_db.is_none_or(|max| db_used <= max - max / 4);
        Verdict {
            shed,
            low: shed > 0 || write_full || (low && !room_back),
        }
    }
}

/// Disk space the hub holds back for the moment the disk is full: a file of real blocks it
/// deletes then. SQLite needs room to delete (the WAL grows before the database shrinks), and
/// alarms and the outbox need room while history makes it; without a reserve, a disk filled
/// to the last byte by something else would leave the hub unable to free anything.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    /// `history.reserve` beside the database: half the minimum free space, at most 16 MB.
    pub fn beside(db: &Path, min_free_mb: u64) -> Self {
        Self {
            path: db.with_extension("reserve"),
            size: (min_free_mb.saturating_mul(1024 * 1024) / 2).min(16 * 1024 * 1024),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Deletes the reserve; true if there was one.
    pub fn release(&mut self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Makes the reserve again if it is missing and `free` bytes leave room for it and more.
    pub fn restore(&mut self, free: u64) {
        if self.size == 0 || self.path.exists() || free < self.size.saturating_mul(4) {
            return;
        }
        if let Err(e) = self.write() {
            let _ = std::fs::remove_file(&self.path);
            tracing::warn!(error = %e, path = %self.path.display(), "cannot make the disk reserve");
        }
    }

    fn write(&self) -> io::Result<()> {
        use std::io::Write as _;
        // Written, not `set_len`: a sparse file holds no blocks and would reserve nothing.
        let mut f = std::fs::File::create(&self.path)?;
        let block = [0u8; 64 * 1024];
        let mut left = self.size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // By hand: std has no statvfs, and libc, which the hub already uses, has it; a crate for
    // one call would add a dependency and nothing else.
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs the call fills.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether an SQLite error means the disk (or the database's cap) is full.
pub fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    fn room() -> Room {
        Room::from_mb(100, 0)
    }

    #[test]
    fn plenty_of_room_sheds_nothing_and_raises_nothing() {
        let v = room().verdict(Some(500 * MB), 40 * MB, false, false);
        assert_eq!(
            v,
            Verdict {
                shed: 0,
                low: false
            }
        );
    }

    #[test]
    fn a_disk_below_its_minimum_sheds_a_quarter_past_it_and_raises_the_alarm() {
        let v = room().verdict(Some(90 * MB), 40 * MB, false, false);
        assert_eq!(v.shed, 125 * MB - 90 * MB);
        assert!(v.low);
    }

    #[test]
    fn the_alarm_stands_until_a_quarter_past_the_minimum_is_free_again() {
        let r = room();
        assert!(r.verdict(Some(110 * MB), 40 * MB, false, true).low);
        assert_eq!(r.verdict(Some(110 * MB), 40 * MB, false, true).shed, 0);
        assert!(!r.verdict(Some(125 * MB), 40 * MB, false, true).low);
        // Not raised by the same figure when it was not standing.
        assert!(!r.verdict(Some(110 * MB), 40 * MB, false, false).low);
    }

    #[test]
    fn a_refused_write_sheds_even_when_the_figures_looked_fine() {
        let v = room().verdict(Some(500 * MB), 64 * MB, true, false);
        assert_eq!(v.shed, 4 * MB);
        assert!(v.low);
    }

    #[test]
    fn a_refused_write_near_the_minimum_sheds_up_to_the_goal() {
        let v = room().verdict(Some(110 * MB), 64 * MB, true, false);
        assert_eq!(v.shed, 15 * MB);
    }

    #[test]
    fn a_capped_database_sheds_down_to_three_quarters_of_its_cap() {
        let r = Room::from_mb(1, 80);
        let v = r.verdict(Some(500 * MB), 90 * MB, false, false);
        assert_eq!(v.shed, 30 * MB);
        assert!(v.low);
        assert!(r.verdict(Some(500 * MB), 70 * MB, false, true).low);
        assert!(!r.verdict(Some(500 * MB), 60 * MB, false, true).low);
    }

    #[test]
    fn an_unknown_free_figure_leaves_the_decision_to_the_cap_and_to_refused_writes() {
        let r = Room::from_mb(100, 0);
        assert_eq!(r.verdict(None, 40 * MB, false, false).shed, 0);
        assert!(r.verdict(None, 40 * MB, true, false).shed > 0);
    }

    #[test]
    fn free_bytes_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let err = free_bytes(&dir.path().join("not-there")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_reserve_holds_real_blocks_and_is_given_back_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.sqlite");
        let mut r = Reserve::beside(&db, 2);
        r.restore(1024);
        assert!(
            !dir.path().join("history.reserve").exists(),
            "no room for it"
        );
        r.restore(u64::MAX);
        let meta = std::fs::metadata(dir.path().join("history.reserve")).unwrap();
        assert_eq!(meta.len(), MB);
        use std::os::unix::fs::MetadataExt as _;
        assert!(meta.blocks() * 512 >= MB, "not sparse");
        assert!(r.release());
        assert!(!r.release(), "released once");
    }

    #[test]
    fn a_full_database_error_is_recognised_and_others_are_not() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x BLOB); PRAGMA max_page_count = 3;")
            .unwrap();
        let e = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .unwrap_err();
        assert!(is_full(&e), "{e}");
        let e = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        assert!(!is_full(&e));
    }
}

//! The process's file-descriptor table, sized once before the first
//! connection.
//!
//! Linux grows a process's descriptor table by doubling it, and while the
//! table is shared by several threads each growth waits for an RCU grace
//! period (`expand_fdtable` calls `synchronize_rcu`); every thread that
//! opens a descriptor meanwhile waits with it. A broker accepting 5,000
//! connections a second went through that at 256, 512, ... 8,192
//! descriptors: stalls of 15-25 ms in connect latency, each one a few
//! dozen connections over the p99. Growing the table to its final size at
//! start pays for it once, before any client waits. The table never
//! shrinks; it costs the kernel 8 bytes per descriptor and little more.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Descriptors kept beyond the connections: listeners, rings, eventfds,
/// the journal's files, a duplicate while a connection changes core.
pub const HEADROOM: usize = 1024;

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (what a process may do
/// without privileges) and returns the new soft limit. A broker's
/// connections are descriptors; the soft default of 1,024 would refuse
/// the 1,021st client.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= hard {
        return Ok(soft);
    }
    let limit = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid `rlimit`, read by the call only.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Grows the descriptor table to hold `fds` descriptors, or as many as the
/// soft limit allows, and returns the size asked for. Never closes or
/// moves a descriptor: it duplicates one to the lowest free number at or
/// above the top and closes that duplicate.
pub fn reserve(fds: usize) -> io::Result<usize> {
    let (soft, _) = nofile_limit()?;
    let size = fds.min(usize::try_from(soft).unwrap_or(usize::MAX));
    if size <= 64 {
        // The table a process starts with.
        return Ok(size);
    }
    let probe = File::open("/dev/null")?;
    let top = libc::c_int::try_from(size - 1).unwrap_or(libc::c_int::MAX);
    // SAFETY: `probe` is open for the call; F_DUPFD_CLOEXEC only creates a
    // new descriptor, at the lowest free number >= `top`.
    let dup = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` was just created by fcntl and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(dup) });
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size, from /proc (`FDSize`).
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn reserve_grows_the_table_and_leaves_nothing_open() {
        let (soft, _) = nofile_limit().unwrap();
        let want = 4096.min(soft as usize);
        assert!(want > 64, "the soft limit ({soft}) is too low for the test");
        let size = reserve(want).unwrap();
        assert_eq!(size, want);
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
        // The duplicate at the top is closed again.
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let top = unsafe { libc::fcntl(want as libc::c_int - 1, libc::F_GETFD) };
        assert_eq!(top, -1);
    }

    /// One test for both: raising the limit while another test reads it
    /// would race.
    #[test]
    fn raise_keeps_the_hard_limit_and_reserve_is_capped_by_it() {
        let (_, hard) = nofile_limit().unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), hard);
        assert_eq!(nofile_limit().unwrap(), (hard, hard));
        if hard <= 1 << 20 {
            // (An unlimited limit would ask for a table past nr_open.)
            assert_eq!(reserve(usize::MAX).unwrap() as u64, hard);
            assert!(table_size() as u64 >= hard);
        }
    }
}

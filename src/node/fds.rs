//! Open files: each client of a tcp/ipc listener is a file descriptor, and at the common default
//! soft limit of 1,024 a flood of half-open connections fills the table. The binary raises the
//! soft limit to the hard one at start; every node caps its sessions below the limit in force,
//! leaving room for its own sockets and libzmq's.

use tracing::info;

/// Descriptors kept aside for everything but client sessions: libzmq's own (a few per
/// socket), our remotes, logs and stdio. An eighth of the limit, and at least this many.
const RESERVED_MIN: u64 = 64;

/// Raises this process's soft limit on open files to its hard limit; returns the soft limit
/// before and after. `zgossip node` calls it at start; an application embedding nodes decides
/// for itself.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    Ok((soft, rlimit::Resource::NOFILE.get()?.0))
}

/// `max_sessions`, lowered to what the open-file limit in force leaves for sessions.
pub(crate) fn sessions_within_limit(max_sessions: usize) -> usize {
    let Ok((soft, _)) = rlimit::Resource::NOFILE.get() else {
        return max_sessions;
    };
    let room = soft.saturating_sub((soft / 8).max(RESERVED_MIN));
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if room < max_sessions {
        info!(
            max_sessions,
            open_file_limit = soft,
            sessions = room,
            "fewer sessions than configured: the open-file limit leaves room for this many"
        );
    }
    max_sessions.min(room)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sessions_never_exceed_what_the_open_file_limit_leaves() {
        let (soft, _) = rlimit::Resource::NOFILE.get().unwrap_or((u64::MAX, 0));
        let sessions = super::sessions_within_limit(usize::MAX);
        assert!(
            (sessions as u64) < soft,
            "{sessions} sessions at a limit of {soft}"
        );
        assert_eq!(super::sessions_within_limit(10), 10.min(sessions));
    }
}

//! What `/proc` says about processes: alive or not, state and parent,
//! children, memory, and the workers tagged with [`CHAOS_TAG`].
#![allow(dead_code)]

pub fn process_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// `(state, ppid)` of a process, from `/proc/PID/stat`.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live (not zombie) children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            matches!(proc_state(pid), Some((s, ppid)) if ppid == parent && s != 'Z' && s != 'X')
        })
        .collect();
    out.sort_unstable();
    out
}

/// Sends `sig` to `pid` only if it is still a live child of this process. A
/// pid read from `worker_pids()` may belong to a worker that has been reaped
/// since; this keeps a recycled pid of a stranger from being signalled.
/// Returns whether the signal was sent.
pub fn signal_child(pid: u32, sig: i32) -> bool {
    match proc_state(pid) {
        Some((s, ppid)) if ppid == std::process::id() && s != 'Z' && s != 'X' => unsafe {
            libc::kill(pid as i32, sig) == 0
        },
        _ => false,
    }
}

fn page_size() -> u64 {
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Resident set size of a process (`None`: this one), from `statm`.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size())
}

/// Peak resident set size (`VmHWM`) of a process (`None`: this one).
pub fn peak_rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub const MIB: u64 = 1 << 20;

/// Marks the workers of one pool so that a killer can find them among the
/// host's children even before their handshake (when `worker_pids()` does
/// not list them yet), without touching other tests' workers.
pub const CHAOS_TAG: &str = "PROCPOOL_CHAOS_TAG";

/// The live children of this process whose environment holds
/// `PROCPOOL_CHAOS_TAG=tag` (a child between fork and exec does not yet).
pub fn tagged_children(tag: &str) -> Vec<u32> {
    let needle = format!("{CHAOS_TAG}={tag}");
    children_of(std::process::id())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

/// Every live process (any parent) whose environment holds
/// `PROCPOOL_CHAOS_TAG=tag`: finds a dead host's orphaned workers.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("{CHAOS_TAG}={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            process_alive(pid)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The worker's protocol descriptors as a hostile job finds them: pipes at
/// fd 3..64 with close-on-exec set (the worker makes its channel with
/// `F_DUPFD_CLOEXEC`; descriptors the host inherited without the flag are
/// closed by `init()`). Returns `(fd, writable)`.
pub fn protocol_fds() -> Vec<(i32, bool)> {
    let mut out = Vec::new();
    for fd in 3..64 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            continue;
        }
        let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fd_flags < 0 || fd_flags & libc::FD_CLOEXEC == 0 {
            continue;
        }
        let access = unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE;
        out.push((fd, access == libc::O_WRONLY || access == libc::O_RDWR));
    }
    out
}

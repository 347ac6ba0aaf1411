//! The few operating-system calls procpool needs. Every `unsafe` block of the
//! crate lives in this module.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The parent process id.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    u32::try_from(ppid).unwrap_or(0)
}

/// Duplicates `fd` to a new descriptor (>= 3) that is closed on exec, so that
/// processes a task starts cannot inherit it.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<File> {
    // SAFETY: fcntl with F_DUPFD_CLOEXEC only creates a new descriptor.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// Closes every descriptor from 3 up that is not close-on-exec, that is
/// every descriptor this process inherited from the one that started it
/// (the host may hold descriptors opened without close-on-exec, by a shell
/// or a C library, and the exec passed them on). Close-on-exec descriptors
/// cannot have been inherited; they were opened by this process (say, the
/// runtime of a `#[tokio::main]` that called `init()`) and are kept.
///
/// Called by `init()` in a worker, before it sets up its channel.
pub(crate) fn close_inherited_fds() {
    for fd in open_fds() {
        // SAFETY: F_GETFD only reads the descriptor's flags (an fd that is
        // not open just fails with EBADF).
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
            continue;
        }
        // SAFETY: `fd` >= 3 lacks close-on-exec, so it was inherited across
        // exec (Rust's std, tokio and procpool open everything close-on-exec)
        // and nothing in this process owns it: no Rust object is left with
        // a closed descriptor. This runs at the start of a worker's `main`,
        // before anything of its own could have opened one.
        unsafe {
            libc::close(fd);
        }
    }
}

/// The descriptor numbers >= 3 that may be open in this process.
fn open_fds() -> Vec<RawFd> {
    for dir in ["/proc/self/fd", "/dev/fd"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            // The directory's own descriptor is listed too; it is
            // close-on-exec, and closed again once this returns.
            return entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd: &RawFd| fd >= 3)
                .collect();
        }
    }
    // No descriptor directory: every number below the descriptor limit
    // (capped, so that a huge limit does not cost seconds).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        RawFd::try_from(limit.rlim_cur).unwrap_or(RawFd::MAX)
    } else {
        1024
    };
    (3..max.min(1 << 16)).collect()
}

/// Makes `dst` refer to what `src` refers to.
pub(crate) fn dup2(src: RawFd, dst: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table.
    cvt(unsafe { libc::dup2(src, dst) }).map(drop)
}

/// Points fd 0 at `/dev/null`, so a task reading stdin sees EOF instead of
/// consuming protocol bytes.
pub(crate) fn stdin_from_dev_null() -> io::Result<()> {
    let null = File::open("/dev/null")?;
    use std::os::fd::AsRawFd;
    dup2(null.as_raw_fd(), 0)
}

/// Asks the kernel to SIGKILL this process when the thread that spawned it
/// exits (Linux only; a backup for EOF detection).
pub(crate) fn set_parent_death_signal() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and has no memory effects.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// Names this process after its program file, the way `ps`, `top`,
/// `pstree` and `pgrep` show it, if it was started through
/// `/proc/self/exe` (which the kernel names `exe`): a worker then shows
/// the name of the host's program, as the host itself does (the kernel's
/// 15-byte limit cuts it the same way). Linux only; does nothing on other
/// threads than the main one (whose name is the process's), for a process
/// started under another name (`Builder::program`), or if a call fails.
///
/// Called by `init()` in a worker.
pub(crate) fn name_after_program() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: gettid and getpid have no preconditions and cannot fail.
        let main_thread = unsafe { libc::gettid() == libc::getpid() };
        if !main_thread {
            return;
        }
        let mut current = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) to the
        // address it is given; `current` is 16 writable bytes that outlive
        // the call.
        let got = unsafe {
            libc::prctl(
                libc::PR_GET_NAME,
                current.as_mut_ptr() as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if got != 0 || !current.starts_with(b"exe\0") {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let Some(file) = exe.file_name() else {
            return;
        };
        let file = file.as_bytes();
        // A binary replaced on disk since the host started reads as deleted.
        let file = file.strip_suffix(b" (deleted)").unwrap_or(file);
        let mut name = [0u8; 16];
        let len = file.len().min(15);
        name[..len].copy_from_slice(&file[..len]);
        // SAFETY: `name` is NUL-terminated (16 bytes, at most 15 of them
        // copied, and file names hold no NUL) and outlives the call;
        // PR_SET_NAME copies at most 16 bytes from it into the kernel and
        // has no other memory effects.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
}

/// Sets `RLIMIT_CORE` to zero so crashing jobs do not write core files.
pub(crate) fn disable_core_dumps() {
    let limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
    }
}

/// Sends SIGKILL to the process group led by `pgid`, and to the process
/// itself in case it left the group.
///
/// The caller must hold the (possibly zombie) child un-reaped, so that the
/// id cannot have been reused.
pub(crate) fn kill_group(pgid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill has no memory effects; a negative pid names a group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Ends the process at once, without running exit handlers or flushing
/// buffers that another thread may hold locked.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Removes an environment variable from this process.
///
/// Called from `init()` at the very start of `main`, before the program has
/// started threads of its own that read the environment.
pub(crate) fn remove_env(key: &str) {
    // SAFETY: see the function docs; the remaining risk is a concurrent
    // getenv in a thread started before main, which procpool documents.
    unsafe { std::env::remove_var(key) }
}

/// Raises a pipe's kernel buffer, which cuts syscalls for large payloads.
/// Errors are ignored: the default size still works.
pub(crate) fn set_pipe_size(fd: RawFd, size: usize) {
    #[cfg(target_os = "linux")]
    {
        let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ only changes the pipe's capacity.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, size);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, size);
}

/// Resident set size of a process in bytes, read from `/proc` (Linux).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// Lowers this process's scheduling priority by `nice` (Unix niceness,
/// added to the current value). Errors are ignored: a worker that cannot
/// change its priority still works.
pub(crate) fn renice(nice: i32) {
    // SAFETY: nice has no memory effects.
    unsafe {
        libc::nice(nice);
    }
}

/// Only buffers larger than this get the hint in [`advise_huge`]. glibc
/// serves them with a private `mmap` of their own (its dynamic mmap
/// threshold stops at 32 MiB), unmapped again on free, so the hint never
/// lands on the shared heap, where it would split and outlive mappings; and
/// a buffer this large takes tens of milliseconds to move anyway, so a
/// rare compaction stall on a huge-page fault is small beside it.
const HUGE_MIN: usize = 32 << 20;

/// The transparent huge page size [`advise_huge`] aligns to (x86-64 and
/// aarch64 with 4 KiB base pages; elsewhere the kernel rounds as it sees fit).
#[cfg(any(target_os = "linux", target_os = "android"))]
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB blocks inside `buf`'s allocation
/// (its spare capacity included) with transparent huge pages, so that a
/// large, freshly allocated buffer costs one page fault per 2 MiB instead of
/// one per 4 KiB. Call it before the pages are first touched: pages already
/// present stay small until the kernel's background collapsing gets to them.
///
/// Only a hint: it changes no contents, does nothing for buffers up to
/// 32 MiB or off Linux, and errors (no THP support, `never` mode) are
/// ignored.
pub(crate) fn advise_huge(buf: &mut Vec<u8>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if buf.capacity() <= HUGE_MIN {
            return;
        }
        let begin = buf.as_mut_ptr() as usize;
        let Some(end) = begin.checked_add(buf.capacity()) else {
            return;
        };
        let start = begin.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let stop = end / HUGE_PAGE * HUGE_PAGE;
        if stop <= start {
            return;
        }
        // SAFETY: [start, stop) lies inside `buf`'s live allocation, which
        // the `&mut` keeps alive and unshared for the call, and `start` is
        // page aligned. MADV_HUGEPAGE only sets a flag on the mapping: the
        // memory's contents and validity do not change, so nothing that
        // Rust knows about the allocation is invalidated.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                stop - start,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = buf;
}

//! Hostile jobs: ones that scribble on or close the worker's protocol
//! channel, or flood its output.
//!
//! Uses `procfs` (include `support/procfs.rs` as `mod procfs;` too).

use procpool::Task;
use serde::{Deserialize, Serialize};

use crate::procfs::{MIB, protocol_fds};

/// Prints `mib` MiB of lines to stdout and as much to stderr, then one
/// 1 MiB line without a newline to each; returns `mib + 1`.
#[derive(Serialize, Deserialize)]
pub struct Flood(pub u32);
impl Task for Flood {
    type Output = u32;
    fn run(self) -> u32 {
        use std::io::Write;
        let line = format!("{}\n", "flood-line ".repeat(9));
        let chunk = line.repeat((64 * 1024) / line.len());
        let total = u64::from(self.0) * MIB;
        let long = "x".repeat(1 << 20);
        {
            let mut out = std::io::stdout().lock();
            let mut n = 0u64;
            while n < total {
                out.write_all(chunk.as_bytes()).unwrap();
                n += chunk.len() as u64;
            }
            out.write_all(long.as_bytes()).unwrap();
            out.flush().unwrap();
        }
        {
            let mut err = std::io::stderr().lock();
            let mut n = 0u64;
            while n < total {
                err.write_all(chunk.as_bytes()).unwrap();
                n += chunk.len() as u64;
            }
            err.write_all(long.as_bytes()).unwrap();
        }
        self.0 + 1
    }
}
procpool::register!(Flood);

/// What a hostile job writes onto the protocol channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    /// 0xff bytes: a length prefix far above any maximum frame size.
    Oversized,
    /// A well-formed frame of an unknown kind.
    BadBody,
    /// A well-formed result frame for a job the worker is not running.
    Forged,
    /// A length prefix for a 64 KiB frame that never comes: the job's real
    /// result frame is swallowed as its first bytes. Only a timeout can
    /// resolve this job.
    Stall,
}

impl Garbage {
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Garbage::Oversized => vec![0xff; 64],
            Garbage::BadBody => vec![8, 0, 0, 0, 0xee, 1, 2, 3, 4, 5, 6, 7],
            // Length 2: kind "done" (0x11), job id 0 (never a real job).
            Garbage::Forged => vec![2, 0, 0, 0, 0x11, 0],
            Garbage::Stall => vec![0, 0, 1, 0],
        }
    }
}

/// Writes garbage to every writable protocol pipe, then returns normally.
/// Returns how many descriptors it wrote to.
#[derive(Serialize, Deserialize)]
pub struct Scribble(pub Garbage);
impl Task for Scribble {
    type Output = u32;
    fn run(self) -> u32 {
        let bytes = self.0.bytes();
        let mut hit = 0;
        for (fd, writable) in protocol_fds() {
            if writable
                && unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }
                    == bytes.len() as isize
            {
                hit += 1;
            }
        }
        eprintln!("scribbled {:?} on {hit} protocol pipe(s)", self.0);
        hit
    }
}
procpool::register!(Scribble);

/// Which protocol descriptors a hostile job closes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Both,
    Output,
    Input,
}

/// Closes protocol descriptors, then returns normally; returns how many
/// it closed.
#[derive(Serialize, Deserialize)]
pub struct CloseChannel(pub Channel);
impl Task for CloseChannel {
    type Output = u32;
    fn run(self) -> u32 {
        let mut closed = 0;
        for (fd, writable) in protocol_fds() {
            let pick = match self.0 {
                Channel::Both => true,
                Channel::Output => writable,
                Channel::Input => !writable,
            };
            if pick && unsafe { libc::close(fd) } == 0 {
                closed += 1;
            }
        }
        eprintln!("closed {closed} protocol descriptor(s) ({:?})", self.0);
        closed
    }
}
procpool::register!(CloseChannel);

/// The protocol descriptors a hostile job would find (see
/// [`protocol_fds`]).
#[derive(Serialize, Deserialize)]
pub struct ListProtocolFds;
impl Task for ListProtocolFds {
    type Output = Vec<(i32, bool)>;
    fn run(self) -> Vec<(i32, bool)> {
        protocol_fds()
    }
}
procpool::register!(ListProtocolFds);

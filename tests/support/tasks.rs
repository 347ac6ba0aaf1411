//! The ordinary tasks: compute, sleep, panic, die, print, echo, and
//! cooperate with a cancel.

use std::time::{Duration, Instant};

use procpool::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Square(pub u64);
impl Task for Square {
    type Output = u64;
    fn run(self) -> u64 {
        self.0 * self.0
    }
}
procpool::register!(Square);

/// Returns the worker's pid.
#[derive(Serialize, Deserialize)]
pub struct Pid;
impl Task for Pid {
    type Output = u32;
    fn run(self) -> u32 {
        std::process::id()
    }
}
procpool::register!(Pid);

/// Sleeps, then returns its pid.
#[derive(Serialize, Deserialize)]
pub struct Sleep(pub u64);
impl Task for Sleep {
    type Output = u32;
    fn run(self) -> u32 {
        std::thread::sleep(Duration::from_millis(self.0));
        std::process::id()
    }
}
procpool::register!(Sleep);

/// Burns CPU for about the given milliseconds; returns (pid, start, end)
/// as milliseconds since the Unix epoch.
#[derive(Serialize, Deserialize)]
pub struct Spin(pub u64);
impl Task for Spin {
    type Output = (u32, u128, u128);
    fn run(self) -> (u32, u128, u128) {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        let start = now();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(self.0) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            std::hint::black_box(x);
        }
        (std::process::id(), start, now())
    }
}
procpool::register!(Spin);

#[derive(Serialize, Deserialize)]
pub struct Panic(pub String);
impl Task for Panic {
    type Output = ();
    fn run(self) {
        panic!("{}", self.0);
    }
}
procpool::register!(Panic);

/// Ways for a worker to die.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub enum Death {
    Abort,
    Segfault,
    Exit(i32),
    Signal(i32),
}
#[derive(Serialize, Deserialize)]
pub struct Die(pub Death);
impl Task for Die {
    type Output = ();
    fn run(self) {
        eprintln!("about to die by {:?}", self.0);
        match self.0 {
            Death::Abort => std::process::abort(),
            // A real invalid memory access.
            Death::Segfault => unsafe { std::ptr::write_volatile(8usize as *mut u8, 1) },
            Death::Exit(code) => std::process::exit(code),
            Death::Signal(sig) => unsafe {
                libc::raise(sig);
            },
        }
        // A signal that does not kill (not expected here).
        std::thread::sleep(Duration::from_secs(60));
    }
}
procpool::register!(Die);

/// Aborts the first time (when the flag file does not exist yet), then
/// returns 7.
#[derive(Serialize, Deserialize)]
pub struct DieOnce(pub String);
impl Task for DieOnce {
    type Output = u64;
    fn run(self) -> u64 {
        if !std::path::Path::new(&self.0).exists() {
            std::fs::write(&self.0, "died").unwrap();
            std::process::abort();
        }
        7
    }
}
procpool::register!(DieOnce);

/// Prints to stdout and stderr in every way a task might, then returns.
#[derive(Serialize, Deserialize)]
pub struct Noisy(pub u32);
impl Task for Noisy {
    type Output = u32;
    fn run(self) -> u32 {
        use std::io::Write;
        println!("println from a task");
        print!("print without a newline ");
        eprintln!("eprintln from a task");
        let raw = b"raw write to fd 1 like a C library\n\x00\xff garbage bytes\n";
        unsafe {
            libc::write(1, raw.as_ptr().cast(), raw.len());
        }
        let _ = std::io::stdout().flush();
        self.0 + 1
    }
}
procpool::register!(Noisy);

/// Returns `n` bytes.
#[derive(Serialize, Deserialize)]
pub struct Bytes(pub usize);
impl Task for Bytes {
    type Output = Vec<u8>;
    fn run(self) -> Vec<u8> {
        vec![0xab; self.0]
    }
}
procpool::register!(Bytes);

/// Echoes its payload.
#[derive(Serialize, Deserialize)]
pub struct Echo(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);
impl Task for Echo {
    type Output = Vec<u8>;
    fn run(self) -> Vec<u8> {
        self.0
    }
}
procpool::register!(Echo);

pub mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Runs until cancelled (polling `procpool::cancelled()`), or for at most
/// the given milliseconds. Returns whether it saw the cancel.
#[derive(Serialize, Deserialize)]
pub struct Cooperative(pub u64);
impl Task for Cooperative {
    type Output = bool;
    fn run(self) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(self.0) {
            if procpool::cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
}
procpool::register!(Cooperative);

/// Panics if the number is `bad`, otherwise squares it.
#[derive(Serialize, Deserialize)]
pub struct SquareUnless {
    pub n: u64,
    pub bad: u64,
}
impl Task for SquareUnless {
    type Output = u64;
    fn run(self) -> u64 {
        assert_ne!(self.n, self.bad, "refusing {}", self.n);
        self.n * self.n
    }
}
procpool::register!(SquareUnless);

//! Helpers shared by the journal's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor and returns its output.
pub fn run<T, F, G>(f: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor finishes")
}

/// A fresh, empty directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A recognisable payload for record `i`.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("record-{i}-").into_bytes();
    p.resize(len.max(p.len()), (i % 251) as u8);
    p
}

//! A panicking task's error says where it panicked: for blocking tasks,
//! async tasks, items of a chunked map (a batch), and a streamed item that
//! fails to serialize (at the task's `emit` call).

mod support;

use futures::StreamExt;
use procpool::{AsyncTask, Emitter, Error, StreamTask, Task};
use serde::{Deserialize, Serialize};
use support::*;

procpool::init_before_main!();

#[derive(Serialize, Deserialize)]
struct Boom(u32);
impl Task for Boom {
    type Output = u32;
    fn run(self) -> u32 {
        if self.0 % 2 == 1 {
            panic!("boom {} (line {})", self.0, line!())
        }
        self.0
    }
}
procpool::register!(Boom);

#[derive(Serialize, Deserialize)]
struct AsyncBoom;
impl AsyncTask for AsyncBoom {
    type Output = ();
    async fn run(self) {
        tokio::task::yield_now().await;
        panic!("async boom (line {})", line!());
    }
}
procpool::register!(AsyncBoom);

/// Refuses to serialize, naming the line it was made at.
struct Refuses(u32);
impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(format!(
            "this item refuses (line {})",
            self.0
        )))
    }
}

#[derive(Serialize, Deserialize)]
struct BadItems;
impl StreamTask for BadItems {
    type Item = Item;
    type Output = ();
    fn run(self, items: &mut Emitter<Item>) {
        items.emit(Item::good(1));
        items.emit(Item::bad(line!()));
    }
}
procpool::register_stream!(BadItems);

#[derive(Serialize)]
struct Item {
    ok: u32,
    bad: Option<Refuses>,
}

impl Item {
    fn good(ok: u32) -> Item {
        Item { ok, bad: None }
    }

    fn bad(line: u32) -> Item {
        Item {
            ok: 0,
            bad: Some(Refuses(line)),
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ok, _): (u32, Option<()>) = Deserialize::deserialize(d)?;
        Ok(Item { ok, bad: None })
    }
}

/// Asserts that `e` is a panic whose message contains `message` and ends
/// with `(line N)`, located at line N of this file.
fn assert_panicked_at(e: &Error, message: &str) {
    match e {
        Error::Panicked {
            message: m,
            location,
        } => {
            assert!(m.contains(message), "{m:?} should contain {message:?}");
            let line = m
                .rsplit_once("(line ")
                .and_then(|(_, l)| l.strip_suffix(')'))
                .expect("the message names its line");
            let at = location.as_deref().expect("the location should be known");
            assert!(
                at.starts_with(&format!("{}:{line}:", file!())),
                "{at} should be at line {line} of this file"
            );
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("the task panicked at {at}: ")),
                "{shown}"
            );
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[tokio::test]
async fn a_blocking_task_s_panic_carries_its_location() {
    let pool = pool(1).await;
    let e = bounded("a panicking job", pool.submit(Boom(7)))
        .await
        .unwrap_err();
    assert_panicked_at(&e, "boom 7");
    // The worker keeps serving, and a later panic is located too.
    assert_eq!(bounded("a job", pool.submit(Boom(8))).await.unwrap(), 8);
    let e = bounded("a panicking job", pool.submit(Boom(9)))
        .await
        .unwrap_err();
    assert_panicked_at(&e, "boom 9");
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_async_task_s_panic_carries_its_location() {
    let pool = pool(1).await;
    let e = bounded("a panicking async job", pool.submit(AsyncBoom))
        .await
        .unwrap_err();
    assert_panicked_at(&e, "async boom");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_panicking_item_of_a_chunked_map_carries_its_location() {
    let pool = pool(1).await;
    let results = bounded(
        "a chunked map",
        pool.map((0..6).map(Boom)).chunk_size(3).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(results.len(), 6);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v as usize, i),
            Err(e) => assert_panicked_at(e, &format!("boom {i}")),
        }
    }
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 3);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_item_that_fails_to_serialize_panics_at_the_emit_call() {
    let pool = pool(1).await;
    let (items, handle) = pool.submit_stream(BadItems);
    let got: Vec<u32> = bounded("the items", items.map(|i| i.unwrap().ok).collect()).await;
    assert_eq!(got, vec![1]);
    let e = bounded("the stream's output", handle).await.unwrap_err();
    assert_panicked_at(&e, "a streamed item failed to serialize");
    let Error::Panicked { message, .. } = &e else {
        unreachable!()
    };
    assert!(message.contains("bad: this item refuses"), "{message}");
    bounded("shutdown", pool.shutdown()).await;
}

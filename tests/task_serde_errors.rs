//! A value that fails to serialize or deserialize fails its job with an
//! `Error::Serialization` that keeps serde's message and says which field
//! failed, instead of postcard's bare "Serde Serialization Error".

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use procpool::{Error, SerdeStage, Task};
use serde::{Deserialize, Serialize};
use support::*;

procpool::init_before_main!();

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    path: PathBuf,
}

/// Counts its files.
#[derive(Serialize, Deserialize)]
struct Files {
    files: Vec<Entry>,
}

impl Task for Files {
    type Output = usize;
    fn run(self) -> usize {
        self.files.len()
    }
}
procpool::register!(Files);

/// Serializes as a `u32`, or fails with its message.
#[derive(Debug)]
struct Picky(Result<u32, String>);

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(v) => s.serialize_u32(*v),
            Err(m) => Err(serde::ser::Error::custom(m)),
        }
    }
}

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(|v| Picky(Ok(v)))
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct Inner {
    id: u32,
    value: Picky,
}

#[derive(Serialize, Deserialize, Debug)]
struct Report {
    title: String,
    rows: Vec<Inner>,
}

/// Returns a report whose row `bad_row` fails to serialize (in the worker).
#[derive(Serialize, Deserialize)]
struct MakeReport {
    bad_row: Option<usize>,
    /// A field of the task itself that fails to serialize (in the host).
    picky: Picky,
}

impl Task for MakeReport {
    type Output = Report;
    fn run(self) -> Report {
        let rows = (0..4)
            .map(|i| Inner {
                id: i as u32,
                value: Picky(if Some(i) == self.bad_row {
                    Err(format!("row {i} cannot be written"))
                } else {
                    Ok(i as u32)
                }),
            })
            .collect();
        Report {
            title: "report".into(),
            rows,
        }
    }
}
procpool::register!(MakeReport);

/// Its output decodes only as far as its `Deserialize` allows.
#[derive(Serialize, Deserialize)]
struct BadOutput;

#[derive(Serialize, Debug)]
struct Strict {
    ok: u32,
    name: String,
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Decodes its `name` as a bool: the host cannot read the output.
        let (ok, _): (u32, Vec<bool>) = Deserialize::deserialize(d)?;
        Ok(Strict {
            ok,
            name: String::new(),
        })
    }
}

impl Task for BadOutput {
    type Output = Strict;
    fn run(self) -> Strict {
        Strict {
            ok: 1,
            name: "\u{3}ab".into(),
        }
    }
}
procpool::register!(BadOutput);

fn serde_message(e: &Error, stage: SerdeStage, type_part: &str) -> String {
    eprintln!("{e}");
    match e {
        Error::Serialization {
            stage: s,
            type_name,
            message,
        } => {
            assert_eq!(*s, stage, "{e}");
            assert!(type_name.contains(type_part), "{type_name}");
            assert!(
                !message.contains("Serde Serialization Error"),
                "the serde message is lost: {e}"
            );
            assert!(e.to_string().ends_with(message.as_str()), "{e}");
            message.clone()
        }
        other => panic!("expected a Serialization error at {stage:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_utf8_path_in_a_task_names_the_field_and_the_cause() {
    let pool = pool(1).await;
    let entry = |name: &str, path: PathBuf| Entry {
        name: name.into(),
        path,
    };
    let files = Files {
        files: vec![
            entry("a", "/tmp/a".into()),
            entry("b", "/tmp/b".into()),
            entry("c", "/tmp/c".into()),
            entry("bad", OsStr::from_bytes(b"/tmp/\xff\xfe").into()),
        ],
    };
    let e = bounded("a bad task", pool.submit(files)).await.unwrap_err();
    let message = serde_message(&e, SerdeStage::EncodeTask, "Files");
    assert_eq!(
        message,
        "files[3].path: path contains invalid UTF-8 characters"
    );
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_custom_serialize_error_in_a_task_keeps_its_message() {
    let pool = pool(1).await;
    let task = MakeReport {
        bad_row: None,
        picky: Picky(Err("the task refuses".into())),
    };
    let e = match pool.try_submit(task) {
        Err(e) => e,
        Ok(_) => panic!("a task that fails to serialize must fail at submit"),
    };
    let message = serde_message(&e, SerdeStage::EncodeTask, "MakeReport");
    assert_eq!(message, "picky: the task refuses");
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn a_custom_serialize_error_in_an_output_names_the_nested_field() {
    let pool = pool(1).await;
    let task = MakeReport {
        bad_row: Some(2),
        picky: Picky(Ok(0)),
    };
    let e = bounded("a bad output", pool.submit(task))
        .await
        .unwrap_err();
    let message = serde_message(&e, SerdeStage::EncodeOutput, "MakeReport");
    assert_eq!(message, "rows[2].value: row 2 cannot be written");
    // The worker is not at fault: it keeps serving.
    let ok = MakeReport {
        bad_row: None,
        picky: Picky(Ok(0)),
    };
    let report = bounded("a good output", pool.submit(ok)).await.unwrap();
    assert_eq!(report.rows.len(), 4);
    assert_eq!(pool.stats().respawns, 0);
    bounded("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn an_output_that_fails_to_decode_names_where() {
    let pool = pool(1).await;
    let e = bounded("an undecodable output", pool.submit(BadOutput))
        .await
        .unwrap_err();
    let message = serde_message(&e, SerdeStage::DecodeOutput, "Strict");
    // postcard decodes a struct as a sequence: the path has positions.
    assert!(message.starts_with("[1][0]: "), "{message}");
    bounded("shutdown", pool.shutdown()).await;
}

/// A task the worker cannot decode (its `Strict` items do not read back).
#[derive(Serialize, Deserialize)]
struct Undecodable {
    items: Vec<Strict>,
}

impl Task for Undecodable {
    type Output = ();
    fn run(self) {}
}
procpool::register!(Undecodable);

#[tokio::test]
async fn a_task_that_fails_to_decode_in_the_worker_names_where() {
    let pool = pool(1).await;
    let task = Undecodable {
        items: vec![Strict {
            ok: 1,
            name: "\u{3}ab".into(),
        }],
    };
    let e = bounded("an undecodable task", pool.submit(task))
        .await
        .unwrap_err();
    let message = serde_message(&e, SerdeStage::DecodeTask, "Undecodable");
    assert!(message.starts_with("[0][0][1][0]: "), "{message}");
    bounded("shutdown", pool.shutdown()).await;
}

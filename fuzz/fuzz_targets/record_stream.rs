//! The record stream every tool reads: arbitrary bytes, a small line limit. No input may panic;
//! every line is a record or a data error (65) naming its line, and a record written back and
//! read again is the same record.
#![no_main]

use elf_core::record::{Reader, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(data, 256);
    let mut last = 0;
    while let Some(item) = reader.next_record() {
        match item {
            Ok((line, rec)) => {
                assert!(line > last);
                last = line;
                let mut w = Writer::new(Vec::new());
                w.write(&rec).expect("a record serializes");
                let text = w.get_mut().clone();
                let again = elf_core::record::parse_line(&text[..text.len() - 1]).expect("reparse");
                assert_eq!(again, Some(rec));
            }
            Err(e) => {
                assert_eq!(e.code(), 65);
                assert!(e.line().is_some_and(|l| l > last));
                last = e.line().unwrap_or(last);
                assert!(!e.to_string().contains('\n'));
            }
        }
    }
});

//! References (`elf_core::refs`): arbitrary bytes split into a record and an instruction value,
//! both JSON. No input may panic; resolving either succeeds with a value that holds no
//! reference of its own making (a resolved value is data) or fails with a data error (65) on one
//! line; a value without references resolves to itself.
#![no_main]

use elf_core::record::Record;
use elf_core::refs;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rec, value) = text.split_once('\n').unwrap_or((text, "{\"$ref\":\"/a\"}"));
    let Ok(Value::Object(rec)) = serde_json::from_str::<Value>(rec) else {
        return;
    };
    let rec: Record = rec;
    let Ok(value) = serde_json::from_str::<Value>(value) else {
        return;
    };
    match refs::resolve(&rec, &value) {
        Ok(out) => {
            if !refs::has_refs(&value).unwrap_or(true) {
                assert_eq!(out.as_ref(), &value);
            }
            // Resolving is one step: the result resolved again against the same record may
            // differ only where the record's own data holds references.
            let _ = refs::resolve(&rec, out.as_ref());
        }
        Err(e) => {
            assert_eq!(e.code(), 65);
            assert!(!e.to_string().contains('\n'));
        }
    }
});

//! elf-db: records in, rows out; contention, crashes, the journal, hostile names and values.

//! Effects outside the state: marked blocks in user files.

pub mod marked_block;

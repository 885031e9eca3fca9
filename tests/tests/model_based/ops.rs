//! The operations of a program and their generator.
//!
//! Operations name handles and savepoints by small numbers taken modulo
//! what exists when the step runs (an operation with nothing to act on is
//! skipped), so every program is valid and every shorter program proptest
//! tries while shrinking is too.

use proptest::prelude::*;

use super::schema::{Row, Table, Val, TABLES};

#[derive(Clone, Debug)]
pub enum Op {
    Add {
        table: Table,
        seed: u8,
    },
    AddAll {
        table: Table,
        seeds: Vec<u8>,
    },
    Get {
        table: Table,
        key: u8,
    },
    GetMany {
        table: Table,
        keys: Vec<u8>,
    },
    /// A query of the rows whose first key column is at most `upto`.
    Query {
        table: Table,
        upto: u8,
    },
    /// Writes field `field` (a key column too) of a handle.
    Write {
        handle: u8,
        field: u8,
        value: u8,
    },
    Delete {
        handle: u8,
    },
    Expunge {
        handle: u8,
    },
    Refresh {
        handle: u8,
    },
    Flush,
    BeginNested,
    RollbackNested {
        level: u8,
    },
    ReleaseNested {
        level: u8,
    },
    Commit,
    Rollback,
    /// Drops the session without commit.
    Drop,
    SetParent {
        child: u8,
        parent: u8,
        sponsor: bool,
    },
    LoadChildren {
        parents: Vec<u8>,
        sponsor: bool,
    },
    /// `UPDATE mb_account SET balance = balance + 1` through `Session::execute`.
    RawBump {
        key: u8,
    },
    /// A raw statement that fails: the transaction is aborted.
    RawFail,
    /// Another session changes a row behind this one's back and commits.
    WriterUpdate {
        table: Table,
        pick: u8,
    },
    /// Another session deletes a row behind this one's back and commits.
    WriterDelete {
        table: Table,
        pick: u8,
    },
}

fn table() -> impl Strategy<Value = Table> {
    proptest::sample::select(TABLES.to_vec())
}

pub fn op() -> impl Strategy<Value = Op> {
    let small = || proptest::collection::vec(any::<u8>(), 1..4);
    prop_oneof![
        6 => (table(), any::<u8>()).prop_map(|(table, seed)| Op::Add { table, seed }),
        2 => (table(), small()).prop_map(|(table, seeds)| Op::AddAll { table, seeds }),
        4 => (table(), any::<u8>()).prop_map(|(table, key)| Op::Get { table, key }),
        2 => (table(), small()).prop_map(|(table, keys)| Op::GetMany { table, keys }),
        3 => (table(), any::<u8>()).prop_map(|(table, upto)| Op::Query { table, upto }),
        8 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(handle, field, value)| Op::Write { handle, field, value }),
        3 => any::<u8>().prop_map(|handle| Op::Delete { handle }),
        1 => any::<u8>().prop_map(|handle| Op::Expunge { handle }),
        2 => any::<u8>().prop_map(|handle| Op::Refresh { handle }),
        3 => Just(Op::Flush),
        2 => Just(Op::BeginNested),
        2 => any::<u8>().prop_map(|level| Op::RollbackNested { level }),
        1 => any::<u8>().prop_map(|level| Op::ReleaseNested { level }),
        2 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Drop),
        3 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(child, parent, sponsor)| Op::SetParent { child, parent, sponsor }),
        2 => (small(), any::<bool>()).prop_map(|(parents, sponsor)| Op::LoadChildren { parents, sponsor }),
        1 => any::<u8>().prop_map(|key| Op::RawBump { key }),
        1 => Just(Op::RawFail),
        2 => (table(), any::<u8>()).prop_map(|(table, pick)| Op::WriterUpdate { table, pick }),
        1 => (table(), any::<u8>()).prop_map(|(table, pick)| Op::WriterDelete { table, pick }),
    ]
}

pub fn program(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..max_len)
}

fn text(prefix: &str, n: u8) -> Val {
    Val::Text(format!("{prefix}{n}"))
}

fn int(n: u8) -> Val {
    Val::Int(i64::from(n))
}

/// The row a seed adds: few distinct keys and unique values, so that
/// collisions with other rows are common. A generated key is 0 until the
/// insert.
pub fn new_row(table: Table, seed: u8) -> Row {
    match table {
        Table::Parent => vec![int(0), text("p", seed % 5), int(seed / 5 % 3)],
        Table::Child => {
            let sponsor = if seed / 20 % 2 == 0 { Val::Null } else { int(1 + seed / 40 % 4) };
            vec![int(1 + seed % 5), int(1 + seed / 5 % 4), sponsor, text("c", 0)]
        }
        Table::Account => vec![int(0), int(seed % 10 * 10), int(0)],
        Table::Pair => vec![int(1 + seed % 3), int(1 + seed / 3 % 2), text("l", seed / 6 % 4)],
    }
}

/// The key a `Get` names.
pub fn key(table: Table, n: u8) -> Row {
    match table {
        Table::Parent | Table::Account => vec![int(1 + n % 6)],
        Table::Child => vec![int(1 + n % 5)],
        Table::Pair => vec![int(1 + n % 3), int(1 + n / 3 % 2)],
    }
}

/// The column a `Write` changes and its new value. Generated keys and
/// versions are never written: the database owns them.
pub fn field(table: Table, field: u8, value: u8) -> (usize, Val) {
    match (table, field % 4) {
        (Table::Parent, 0 | 1) => (1, text("p", value % 5)),
        (Table::Parent, _) => (2, int(value % 4)),
        (Table::Child, 0) => (0, int(1 + value % 5)),
        (Table::Child, 1) => (1, int(1 + value % 4)),
        (Table::Child, 2) => (2, if value % 3 == 0 { Val::Null } else { int(1 + value % 4) }),
        (Table::Child, _) => (3, text("c", value % 3)),
        (Table::Account, _) => (1, int(value % 7)),
        (Table::Pair, 0) => (0, int(1 + value % 3)),
        (Table::Pair, 1) => (1, int(1 + value % 2)),
        (Table::Pair, _) => (2, text("l", value % 4)),
    }
}

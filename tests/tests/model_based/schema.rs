//! The schema the random programs run on: the features that interact in a
//! session, each on a small table. Rows are seen by the model as plain
//! vectors of values; the entities convert to and from them.

use orm_core::{Condition, Entity, Order, Relation, Tracked};

/// A generated key and a unique column.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "mb_parent")]
pub struct Parent {
    #[orm(primary_key, generated)]
    pub id: i64,
    pub name: String,
    pub rank: i64,
}

/// An application-assigned key, a NOT NULL and a nullable foreign key.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "mb_child")]
pub struct Child {
    #[orm(primary_key)]
    pub id: i64,
    #[orm(references = Parent)]
    pub parent_id: i64,
    #[orm(references = Parent)]
    pub sponsor_id: Option<i64>,
    pub note: String,
}

/// A version column: optimistic concurrency.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "mb_account")]
pub struct Account {
    #[orm(primary_key, generated)]
    pub id: i64,
    pub balance: i64,
    #[orm(version)]
    pub version: i32,
}

/// A composite key and a unique column.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "mb_pair")]
pub struct Pair {
    #[orm(primary_key)]
    pub a: i64,
    #[orm(primary_key)]
    pub b: i64,
    pub label: String,
}

pub const SCHEMA: &str = "
    CREATE TABLE mb_parent (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, rank bigint NOT NULL);
    CREATE TABLE mb_child (id bigint PRIMARY KEY, parent_id bigint NOT NULL REFERENCES mb_parent,
        sponsor_id bigint REFERENCES mb_parent, note text NOT NULL);
    CREATE TABLE mb_account (id bigserial PRIMARY KEY, balance bigint NOT NULL, version int NOT NULL);
    CREATE TABLE mb_pair (a bigint, b bigint, label text NOT NULL UNIQUE, PRIMARY KEY (a, b));
";

/// Empties the tables (the sequences too) and inserts the rows every
/// program starts from: [`seed_rows`].
pub const RESET: &str = "
    TRUNCATE mb_child, mb_parent, mb_account, mb_pair RESTART IDENTITY;
    INSERT INTO mb_parent (name, rank) VALUES ('p0', 0), ('p1', 0);
    INSERT INTO mb_child VALUES (1, 1, NULL, 'c'), (2, 2, 1, 'c');
    INSERT INTO mb_account (balance, version) VALUES (100, 0), (200, 0);
    INSERT INTO mb_pair VALUES (1, 1, 'l0');
";

/// A column's value as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Val {
    Int(i64),
    Text(String),
    Null,
}

pub type Row = Vec<Val>;
/// The key columns of a row, in order.
pub type Key = Vec<Val>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Parent,
    Child,
    Account,
    Pair,
}

pub const TABLES: [Table; 4] = [Table::Parent, Table::Child, Table::Account, Table::Pair];

/// What the model needs to know of a table's constraints.
pub struct Spec {
    pub sql_name: &'static str,
    /// Each column cast so it decodes as `Option<i64>` (`int`) or `Option<String>`.
    pub select: &'static str,
    pub text_columns: &'static [usize],
    pub key_len: usize,
    pub generated_key: bool,
    pub unique: Option<usize>,
    /// Columns referencing `mb_parent`.
    pub foreign_keys: &'static [usize],
    pub version: Option<usize>,
}

impl Table {
    pub fn spec(self) -> &'static Spec {
        match self {
            Table::Parent => &Spec {
                sql_name: "mb_parent",
                select: "SELECT id, name, rank FROM mb_parent",
                text_columns: &[1],
                key_len: 1,
                generated_key: true,
                unique: Some(1),
                foreign_keys: &[],
                version: None,
            },
            Table::Child => &Spec {
                sql_name: "mb_child",
                select: "SELECT id, parent_id, sponsor_id, note FROM mb_child",
                text_columns: &[3],
                key_len: 1,
                generated_key: false,
                unique: None,
                foreign_keys: &[1, 2],
                version: None,
            },
            Table::Account => &Spec {
                sql_name: "mb_account",
                select: "SELECT id, balance, version::int8 FROM mb_account",
                text_columns: &[],
                key_len: 1,
                generated_key: true,
                unique: None,
                foreign_keys: &[],
                version: Some(2),
            },
            Table::Pair => &Spec {
                sql_name: "mb_pair",
                select: "SELECT a, b, label FROM mb_pair",
                text_columns: &[2],
                key_len: 2,
                generated_key: false,
                unique: Some(2),
                foreign_keys: &[],
                version: None,
            },
        }
    }

    pub fn key_of(self, row: &Row) -> Key {
        row[..self.spec().key_len].to_vec()
    }

    /// The rows every program starts from, as [`RESET`] inserts them.
    pub fn seed_rows(self) -> Vec<Row> {
        let int = Val::Int;
        let text = |s: &str| Val::Text(s.to_owned());
        match self {
            Table::Parent => vec![vec![int(1), text("p0"), int(0)], vec![int(2), text("p1"), int(0)]],
            Table::Child => vec![vec![int(1), int(1), Val::Null, text("c")], vec![int(2), int(2), int(1), text("c")]],
            Table::Account => vec![vec![int(1), int(100), int(0)], vec![int(2), int(200), int(0)]],
            Table::Pair => vec![vec![int(1), int(1), text("l0")]],
        }
    }
}

fn int(value: &Val) -> i64 {
    match value {
        Val::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn text(value: &Val) -> String {
    match value {
        Val::Text(s) => s.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// One handle of any of the tables.
#[derive(Clone)]
pub enum AnyHandle {
    Parent(Tracked<Parent>),
    Child(Tracked<Child>),
    Account(Tracked<Account>),
    Pair(Tracked<Pair>),
}

impl AnyHandle {
    pub fn row(&self) -> Row {
        match self {
            AnyHandle::Parent(h) => h.get().to_row(),
            AnyHandle::Child(h) => h.get().to_row(),
            AnyHandle::Account(h) => h.get().to_row(),
            AnyHandle::Pair(h) => h.get().to_row(),
        }
    }
}

/// An entity of the schema, seen as a row of the model.
pub trait ModelEntity: Entity + Clone {
    const TABLE: Table;
    fn to_row(&self) -> Row;
    fn from_model_row(row: &Row) -> Self;
    fn model_key(key: &Key) -> Self::Key;
    fn wrap(handle: Tracked<Self>) -> AnyHandle;
    fn unwrap(handle: &AnyHandle) -> Option<&Tracked<Self>>;
    /// The rows whose first key column is at most `upto`, by key.
    fn up_to(upto: i64) -> (Condition<Self>, Vec<Order<Self>>);
}

impl ModelEntity for Parent {
    const TABLE: Table = Table::Parent;
    fn to_row(&self) -> Row {
        vec![Val::Int(self.id), Val::Text(self.name.clone()), Val::Int(self.rank)]
    }
    fn from_model_row(row: &Row) -> Self {
        Parent { id: int(&row[0]), name: text(&row[1]), rank: int(&row[2]) }
    }
    fn model_key(key: &Key) -> i64 {
        int(&key[0])
    }
    fn wrap(handle: Tracked<Self>) -> AnyHandle {
        AnyHandle::Parent(handle)
    }
    fn unwrap(handle: &AnyHandle) -> Option<&Tracked<Self>> {
        if let AnyHandle::Parent(h) = handle {
            Some(h)
        } else {
            None
        }
    }
    fn up_to(upto: i64) -> (Condition<Self>, Vec<Order<Self>>) {
        (Parent::ID.le(upto), vec![Parent::ID.asc()])
    }
}

impl ModelEntity for Child {
    const TABLE: Table = Table::Child;
    fn to_row(&self) -> Row {
        vec![
            Val::Int(self.id),
            Val::Int(self.parent_id),
            self.sponsor_id.map_or(Val::Null, Val::Int),
            Val::Text(self.note.clone()),
        ]
    }
    fn from_model_row(row: &Row) -> Self {
        let sponsor_id = if row[2] == Val::Null { None } else { Some(int(&row[2])) };
        Child { id: int(&row[0]), parent_id: int(&row[1]), sponsor_id, note: text(&row[3]) }
    }
    fn model_key(key: &Key) -> i64 {
        int(&key[0])
    }
    fn wrap(handle: Tracked<Self>) -> AnyHandle {
        AnyHandle::Child(handle)
    }
    fn unwrap(handle: &AnyHandle) -> Option<&Tracked<Self>> {
        if let AnyHandle::Child(h) = handle {
            Some(h)
        } else {
            None
        }
    }
    fn up_to(upto: i64) -> (Condition<Self>, Vec<Order<Self>>) {
        (Child::ID.le(upto), vec![Child::ID.asc()])
    }
}

impl ModelEntity for Account {
    const TABLE: Table = Table::Account;
    fn to_row(&self) -> Row {
        vec![Val::Int(self.id), Val::Int(self.balance), Val::Int(i64::from(self.version))]
    }
    fn from_model_row(row: &Row) -> Self {
        let version = i32::try_from(int(&row[2])).expect("a version in i32's range");
        Account { id: int(&row[0]), balance: int(&row[1]), version }
    }
    fn model_key(key: &Key) -> i64 {
        int(&key[0])
    }
    fn wrap(handle: Tracked<Self>) -> AnyHandle {
        AnyHandle::Account(handle)
    }
    fn unwrap(handle: &AnyHandle) -> Option<&Tracked<Self>> {
        if let AnyHandle::Account(h) = handle {
            Some(h)
        } else {
            None
        }
    }
    fn up_to(upto: i64) -> (Condition<Self>, Vec<Order<Self>>) {
        (Account::ID.le(upto), vec![Account::ID.asc()])
    }
}

impl ModelEntity for Pair {
    const TABLE: Table = Table::Pair;
    fn to_row(&self) -> Row {
        vec![Val::Int(self.a), Val::Int(self.b), Val::Text(self.label.clone())]
    }
    fn from_model_row(row: &Row) -> Self {
        Pair { a: int(&row[0]), b: int(&row[1]), label: text(&row[2]) }
    }
    fn model_key(key: &Key) -> (i64, i64) {
        (int(&key[0]), int(&key[1]))
    }
    fn wrap(handle: Tracked<Self>) -> AnyHandle {
        AnyHandle::Pair(handle)
    }
    fn unwrap(handle: &AnyHandle) -> Option<&Tracked<Self>> {
        if let AnyHandle::Pair(h) = handle {
            Some(h)
        } else {
            None
        }
    }
    fn up_to(upto: i64) -> (Condition<Self>, Vec<Order<Self>>) {
        (Pair::A.le(upto), vec![Pair::A.asc(), Pair::B.asc()])
    }
}

/// The relation a child's foreign-key column belongs to.
pub fn relation(sponsor: bool) -> Relation<Child, Parent> {
    if sponsor {
        Child::SPONSOR
    } else {
        Child::PARENT
    }
}

/// The column of [`relation`] in a child's row.
pub fn relation_column(sponsor: bool) -> usize {
    if sponsor {
        2
    } else {
        1
    }
}

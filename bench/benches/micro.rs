//! Micro-benchmarks of the ORM's in-memory work: an identity-map hit,
//! change detection, flush planning, decoding a row's values from their wire
//! form, and walking and cascade-deleting the relations of 8,000 parents
//! with 10 children each.
//!
//! `cargo bench -p bench --bench micro`
//!
//! None of them sends SQL while measured. Only the `children()` one needs
//! a database, to load its collections once before the clock starts
//! (`session.children` answers only for collections `load_children`
//! loaded): it runs on `DATABASE_URL`, as the tests do, and is skipped with
//! a message when that is unset.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use orm_core::{Database, Entity, Session, Tracked};
use tokio_postgres::types::{FromSql, ToSql, Type};

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "customer")]
struct Customer {
    #[orm(primary_key, generated)]
    id: i32,
    name: String,
    description: Option<String>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "parent")]
struct Parent {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "child")]
struct Child {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Parent, on_delete = "cascade")]
    parent_id: i64,
    name: String,
}

/// Parents, and children per parent, of the relation benchmarks.
const PARENTS: i64 = 8_000;
const CHILDREN_PER_PARENT: i64 = 10;

fn customer(id: i32) -> Customer {
    Customer { id, name: format!("customer {id}"), description: Some(format!("description of customer {id}")) }
}

/// A session on a pool that never connects: nothing here sends SQL.
fn offline_session() -> Session {
    Database::connect("postgres://bench@127.0.0.1:9/none").expect("a valid URL").session()
}

fn tracked_and_changed(session: &mut Session, count: i32) -> Vec<Tracked<Customer>> {
    let handles: Vec<_> = (1..=count).map(|id| session.attach(customer(id))).collect();
    for handle in &handles {
        handle.write().name.push_str(" (renamed)");
    }
    handles
}

fn identity_map_hit(c: &mut Criterion) {
    let mut session = offline_session();
    session.attach(customer(1));
    c.bench_function("identity-map hit (get of a tracked key)", |b| {
        b.iter(|| {
            let found = session.get::<Customer>(black_box(1)).now_or_never();
            assert!(matches!(found, Some(Ok(Some(_)))), "a hit completes without I/O");
        });
    });
}

fn change_detection(c: &mut Criterion) {
    let mut session = offline_session();
    let handles = tracked_and_changed(&mut session, 10_000);
    c.bench_function("change detection over 10,000 written entities", |b| {
        b.iter(|| handles.iter().filter(|h| h.is_modified()).count());
    });
}

fn flush_planning(c: &mut Criterion) {
    let mut session = offline_session();
    let _handles = tracked_and_changed(&mut session, 10_000);
    c.bench_function("flush planning of 10,000 changes", |b| {
        b.iter(|| {
            let pending = session.pending().expect("planning needs no database");
            assert_eq!(pending.statements, 1);
        });
    });
}

fn row_decoding(c: &mut Criterion) {
    let source = customer(42);
    let mut id = BytesMut::new();
    let mut name = BytesMut::new();
    let mut description = BytesMut::new();
    source.id.to_sql(&Type::INT4, &mut id).expect("encode");
    source.name.to_sql(&Type::VARCHAR, &mut name).expect("encode");
    source.description.to_sql(&Type::VARCHAR, &mut description).expect("encode");
    c.bench_function("decoding one customer's column values", |b| {
        b.iter(|| Customer {
            id: i32::from_sql(&Type::INT4, black_box(&id)).expect("decode"),
            name: String::from_sql(&Type::VARCHAR, black_box(&name)).expect("decode"),
            description: Option::<String>::from_sql_nullable(&Type::VARCHAR, Some(black_box(&description)))
                .expect("decode"),
        });
    });
}

/// `children()` of every parent, the collections loaded before the clock
/// starts, on a database of its own.
fn children_of_every_parent(c: &mut Criterion) {
    if std::env::var_os("DATABASE_URL").is_none() {
        eprintln!("children() benchmark skipped: set DATABASE_URL to a PostgreSQL server it may create a database on");
        return;
    }
    let mut group = c.benchmark_group("relations");
    group.sample_size(20);
    group.bench_function("children() of 8,000 parents with 10 children each", |b| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
        let (test_db, mut session, parents) = runtime.block_on(async {
            let test_db = orm_tests::TestDb::new().await;
            let seed = "CREATE TABLE parent (id bigserial PRIMARY KEY, name text NOT NULL);
                CREATE TABLE child (id bigserial PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parent, name text NOT NULL);
                INSERT INTO parent (name) SELECT 'parent ' || n FROM generate_series(1, 8000) AS n;
                INSERT INTO child (parent_id, name) SELECT p, 'child' FROM generate_series(1, 8000) AS p, generate_series(1, 10);";
            test_db.client().await.batch_execute(seed).await.expect("seeded");
            let mut session = Database::connect(test_db.url()).expect("a valid URL").session();
            let parents = session.query::<Parent>().all().await.expect("parents loaded");
            let children = session.load_children(&parents, Child::PARENT).await.expect("children loaded");
            assert_eq!(children.len(), usize::try_from(PARENTS * CHILDREN_PER_PARENT).expect("fits"));
            (test_db, session, parents)
        });
        b.iter(|| {
            let mut found = 0;
            for parent in &parents {
                found += session.children(parent, Child::PARENT).expect("loaded").len();
            }
            assert_eq!(found, 80_000);
        });
        runtime.block_on(async move { drop(session) });
        drop(test_db);
    });
    group.finish();
}

/// Deleting every parent, which cascades to its children, in a session that
/// tracks 8,000 parents and 80,000 children (attached: no database).
fn cascade_delete_every_parent(c: &mut Criterion) {
    let mut group = c.benchmark_group("relations");
    group.sample_size(20);
    group.bench_function("delete of 8,000 parents cascading to 10 children each", |b| {
        b.iter_batched_ref(
            || {
                let mut session = offline_session();
                let parents: Vec<_> =
                    (1..=PARENTS).map(|id| session.attach(Parent { id, name: format!("parent {id}") })).collect();
                for id in 1..=PARENTS * CHILDREN_PER_PARENT {
                    let parent_id = (id - 1) / CHILDREN_PER_PARENT + 1;
                    session.attach(Child { id, parent_id, name: "child".into() });
                }
                (session, parents)
            },
            |(session, parents)| {
                for parent in parents.iter() {
                    session.delete(parent).expect("tracked");
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(
    micro,
    identity_map_hit,
    change_detection,
    flush_planning,
    row_decoding,
    children_of_every_parent,
    cascade_delete_every_parent
);
criterion_main!(micro);

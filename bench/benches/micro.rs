//! Micro-benchmarks of the ORM's in-memory work, with no database: an
//! identity-map hit, change detection, flush planning, and decoding a row's
//! values from their wire form.
//!
//! `cargo bench -p bench --bench micro`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group!(micro, identity_map_hit, change_detection, flush_planning, row_decoding);
criterion_main!(micro);

//! W11, hooks: W3's bulk update through a pool whose sessions run an entity
//! hook that stamps every updated row (as an `updated_at` hook would),
//! against the hand-written update that writes the same two columns.

use orm_core::{async_trait, ChangedColumns, Database, EntityEvents, HookResult, Session, Tracked};

use crate::customer::Customer;
use crate::measure::Traffic;
use crate::workloads::{begin_and_load_all, check, take_name, BenchError, SELECT_ALL};

type Outcome = Result<Traffic, BenchError>;

/// The stamp a row gets when its name changes.
fn stamp(name: &str) -> String {
    format!("{name}, stamped")
}

/// Stamps `description` on every customer the flush updates.
pub struct Stamp;

#[async_trait]
impl EntityEvents<Customer> for Stamp {
    async fn before_update(
        &self,
        customer: &Tracked<Customer>,
        _: ChangedColumns<Customer>,
        _: &mut Session,
    ) -> HookResult {
        customer.modify(|customer| customer.description = Some(stamp(&customer.name)));
        Ok(())
    }
}

/// W11 by hand: load every row, change the names and stamp them, one
/// UNNEST update of both columns, in one transaction.
pub async fn raw_stamped_update(db: &Database, n: usize, mut names: Vec<String>) -> Outcome {
    let client = db.pool().get().await?;
    let select = client.prepare_cached(SELECT_ALL).await?;
    let update = client
        .prepare_cached(
            "UPDATE customer SET name = v.name, description = v.description \
             FROM UNNEST($1::int4[], $2::text[], $3::text[]) AS v(id, name, description) WHERE customer.id = v.id",
        )
        .await?;
    let mut customers = begin_and_load_all(&client, &select, n).await?;
    for customer in &mut customers {
        customer.name = take_name(&mut names, customer.id)?;
        customer.description = Some(stamp(&customer.name));
    }
    let ids: Vec<i32> = customers.iter().map(|c| c.id).collect();
    let names: Vec<&str> = customers.iter().map(|c| c.name.as_str()).collect();
    let descriptions: Vec<Option<&str>> = customers.iter().map(|c| c.description.as_deref()).collect();
    let (updated, commit) = futures_util::future::join(
        client.execute(&update, &[&ids, &names, &descriptions]),
        client.batch_execute("COMMIT"),
    )
    .await;
    check(usize::try_from(updated?)? == n, "updated every row")?;
    commit?;
    let mut traffic = Traffic::default();
    traffic.add(2, 2);
    Ok(traffic)
}

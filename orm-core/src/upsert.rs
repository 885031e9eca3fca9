//! [`Upsert`]: inserting many rows the session does not track, with a rule
//! for rows that clash with existing ones (`INSERT ... ON CONFLICT`), in one
//! statement whatever their number.

use crate::column::Column;
use crate::connection::Access;
use crate::entity::{ColumnSet, Entity};
use crate::error::Result;
use crate::session::Session;
use crate::sql;
use crate::types::{param_refs, ColumnType};

/// Rows to insert with an `ON CONFLICT` rule, made by [`Session::upsert`]
/// and run by [`do_update`](Self::do_update) or
/// [`do_nothing`](Self::do_nothing).
#[must_use = "an upsert does nothing until it is run with do_update() or do_nothing()"]
pub struct Upsert<'s, E: Entity> {
    session: &'s mut Session,
    rows: Vec<E>,
    conflict: ColumnSet,
}

impl Session {
    /// Inserts `rows` with one statement, whatever their number (one array
    /// parameter per column, as a flush does), with a rule for rows whose
    /// key, or the columns named with [`on_conflict`](Upsert::on_conflict),
    /// clash with an existing row. The rows are not tracked; instances the
    /// session already tracks for the rows written are refreshed with what
    /// the database holds afterwards, so the session never disagrees with
    /// it. It autoflushes first and runs in the session's transaction.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Price {
    ///     #[orm(primary_key)]
    ///     sku: String,
    ///     cents: i64,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE price (sku text PRIMARY KEY, cents int8 NOT NULL);
    /// #     INSERT INTO price VALUES ('tea', 400)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let feed = vec![Price { sku: "tea".into(), cents: 450 }, Price { sku: "jam".into(), cents: 500 }];
    /// let written = session.upsert(feed).do_update([Price::CENTS]).await?;
    /// assert_eq!(written, 2); // tea updated, jam inserted, in one statement
    ///
    /// let again = vec![Price { sku: "jam".into(), cents: 1 }];
    /// assert_eq!(session.upsert(again).do_nothing().await?, 0); // jam exists: left alone
    /// session.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn upsert<E: Entity>(&mut self, rows: Vec<E>) -> Upsert<'_, E> {
        Upsert { session: self, rows, conflict: E::META.key_set() }
    }
}

impl<E: Entity> Upsert<'_, E> {
    /// The columns whose clash decides, instead of the primary key: they
    /// must carry a unique index or constraint. Call once per column.
    pub fn on_conflict<V: ColumnType>(mut self, column: Column<E, V>) -> Self {
        if self.conflict == E::META.key_set() {
            self.conflict = 0;
        }
        if let Some(index) = E::META.columns.iter().position(|c| c.name == column.name()) {
            self.conflict |= 1 << index;
        }
        self
    }

    /// Runs the statement: a clashing row gets the listed columns of the
    /// new row (and its version advances). Returns the rows inserted or
    /// updated.
    pub async fn do_update<V: ColumnType>(self, columns: impl IntoIterator<Item = Column<E, V>>) -> Result<u64> {
        let update = columns.into_iter().fold(0, |set, column| {
            set | E::META.columns.iter().position(|c| c.name == column.name()).map_or(0, |index| 1 << index)
        });
        self.run(update).await
    }

    /// Runs the statement: a clashing row is left as it is. Returns the
    /// rows inserted.
    pub async fn do_nothing(self) -> Result<u64> {
        self.run(0).await
    }

    async fn run(self, update: ColumnSet) -> Result<u64> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        self.session.autoflush_for_query().await?;
        let meta = E::META;
        let columns = meta.insert_columns();
        // The rows written come back only to refresh instances the session
        // tracks: with none of this type, the count is all there is to know.
        let refresh = self.session.registries.get_ref::<E>().is_some_and(|registry| !registry.identity.is_empty());
        let statement = sql::upsert(meta, columns, self.conflict, update, refresh);
        let entities: Vec<&E> = self.rows.iter().collect();
        let params: Vec<_> = sql::batch_insert_parameters(columns)
            .into_iter()
            .map(|column| E::column_array(&entities, column))
            .collect();
        if !refresh {
            return self.session.affected(&statement, &param_refs(&params), Access::Write).await;
        }
        let rows = self.session.rows(&statement, &param_refs(&params), Access::Write).await?;
        let written = rows.iter().map(|row| E::from_row(row, 0)).collect::<Result<Vec<E>>>()?;
        let count = written.len() as u64;
        self.session.populate_existing(written, false)?;
        Ok(count)
    }
}

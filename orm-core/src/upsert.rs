//! Inserting with a rule for rows that clash with existing ones (`INSERT
//! ... ON CONFLICT`): [`Upsert`] for many rows the session does not track,
//! in one statement whatever their number, and [`OnConflict`] for tracked
//! entities that the unit of work flushes in its batches.

use std::marker::PhantomData;

use crate::column::Column;
use crate::connection::Access;
use crate::entity::{ColumnSet, Entity};
use crate::error::Result;
use crate::session::Session;
use crate::sql;
use crate::tracked::Tracked;
use crate::transaction_mark::Guard;
use crate::types::{param_refs, ColumnType};

/// Rows to insert with an `ON CONFLICT` rule, made by [`Session::upsert`]
/// and run by [`do_update`](Self::do_update) or
/// [`do_nothing`](Self::do_nothing).
#[must_use = "an upsert does nothing until it is run with do_update() or do_nothing()"]
pub struct Upsert<'s, E: Entity> {
    session: &'s mut Session,
    rows: Vec<E>,
    /// The columns named by `on_conflict`; none means the primary key.
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
    /// In a tenant's session ([`Database::session_for_tenant`](crate::Database::session_for_tenant)),
    /// rows without a tenant get the session's, a row of another tenant is
    /// refused with [`Error::WrongTenant`](crate::Error::WrongTenant) before
    /// anything is sent, and a row whose key another tenant's row holds is
    /// left alone (and not counted).
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
        Upsert { session: self, rows, conflict: 0 }
    }
}

/// The bit of `column` in its entity's column sets.
fn column_bit<E: Entity, V: ColumnType>(column: Column<E, V>) -> ColumnSet {
    E::META.columns.iter().position(|c| c.name == column.name()).map_or(0, |index| 1 << index)
}

/// Columns of `E` that an upsert updates on conflict: one column, an array
/// of columns of one type, or a tuple of columns of any types, as
/// `(Book::TITLE, Book::PRICE)`.
pub trait UpdateColumns<E: Entity> {
    /// The columns, as a bit per column index.
    #[doc(hidden)]
    fn column_set(self) -> ColumnSet;
}

impl<E: Entity, V: ColumnType> UpdateColumns<E> for Column<E, V> {
    fn column_set(self) -> ColumnSet {
        column_bit(self)
    }
}

impl<E: Entity, V: ColumnType, const N: usize> UpdateColumns<E> for [Column<E, V>; N] {
    fn column_set(self) -> ColumnSet {
        self.into_iter().fold(0, |set, column| set | column_bit(column))
    }
}

macro_rules! update_columns_for_tuples {
    ($(($($name:ident),+)),+) => {$(
        impl<E: Entity, $($name: UpdateColumns<E>),+> UpdateColumns<E> for ($($name,)+) {
            #[allow(non_snake_case)]
            fn column_set(self) -> ColumnSet {
                let ($($name,)+) = self;
                0 $(| $name.column_set())+
            }
        }
    )+};
}

update_columns_for_tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, F),
    (A, B, C, D, F, G),
    (A, B, C, D, F, G, H),
    (A, B, C, D, F, G, H, I)
);

impl<E: Entity> Upsert<'_, E> {
    /// The columns whose clash decides, instead of the primary key: they
    /// must carry a unique index or constraint. Call once per column.
    pub fn on_conflict<V: ColumnType>(mut self, column: Column<E, V>) -> Self {
        self.conflict |= column_bit(column);
        self
    }

    /// Runs the statement: a clashing row gets the listed columns of the
    /// new row (and its version advances); a `generated` column listed
    /// takes its default, as in a new row. Returns the rows inserted or
    /// updated.
    pub async fn do_update(self, columns: impl UpdateColumns<E>) -> Result<u64> {
        self.run(columns.column_set()).await
    }

    /// Runs the statement: a clashing row is left as it is. Returns the
    /// rows inserted.
    pub async fn do_nothing(self) -> Result<u64> {
        self.run(0).await
    }

    async fn run(mut self, update: ColumnSet) -> Result<u64> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        // As the flush fills in and checks added entities: the statement's
        // clash guard (the tenant of the row it would update) compares
        // with the new rows' tenant, which must be the session's.
        for row in &mut self.rows {
            self.session.filters.claim_new(row)?;
        }
        self.session.autoflush_for_query().await?;
        let meta = E::META;
        let columns = meta.insert_columns();
        // The rows written come back only to refresh instances the session
        // tracks: with none of this type, the count is all there is to know.
        let refresh = self.session.registries.get_ref::<E>().is_some_and(|registry| !registry.identity.is_empty());
        let conflict = if self.conflict == 0 { meta.key_set() } else { self.conflict };
        let statement = sql::upsert(meta, columns, conflict, update, refresh, Guard::InUnitOfWork);
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
        self.session.populate_existing(written, false).await?;
        Ok(count)
    }
}

/// How the flush inserts an entity added with
/// [`Session::add_on_conflict`]: which columns clash with an existing row
/// (the primary key, or columns under a unique constraint), and what
/// happens to that row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConflictRule {
    /// The conflict target (`ON CONFLICT (...)`).
    pub(crate) target: ColumnSet,
    /// The columns a clashing row takes from the new one; none for `DO NOTHING`.
    pub(crate) update: ColumnSet,
}

/// The columns that decide whether a new row clashes with an existing one,
/// made by [`OnConflict::key`] or [`OnConflict::columns`]; say what happens
/// then with [`do_update`](Self::do_update) or
/// [`do_nothing`](Self::do_nothing).
#[must_use = "a conflict target says nothing until do_update() or do_nothing() gives it an action"]
pub struct ConflictTarget<E> {
    target: ColumnSet,
    entity: PhantomData<fn() -> E>,
}

impl<E> Clone for ConflictTarget<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ConflictTarget<E> {}

/// The rule for inserting entities that may already exist, for
/// [`Session::add_on_conflict`] and [`Session::add_all_on_conflict`]: the
/// flush sends them in one `INSERT ... ON CONFLICT ... RETURNING` statement
/// per rule (10,000 entities are one statement), and each handle then holds
/// the row as the database has it: the new row, or the existing one after
/// the update.
///
/// Build one with [`OnConflict::key`] or [`OnConflict::columns`], then
/// [`do_update`](ConflictTarget::do_update) or
/// [`do_nothing`](ConflictTarget::do_nothing). `Copy`, so one rule serves
/// many adds.
pub struct OnConflict<E> {
    pub(crate) rule: ConflictRule,
    entity: PhantomData<fn() -> E>,
}

impl<E> Clone for OnConflict<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for OnConflict<E> {}

impl<E: Entity> std::fmt::Debug for OnConflict<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnConflict").field("entity", &E::META.name).field("rule", &self.rule).finish()
    }
}

impl Session {
    /// Adds a new entity that may already exist in the database: the next
    /// flush inserts it with `rule` for a clashing row, in one `INSERT ...
    /// ON CONFLICT ... RETURNING` statement with every other entity added
    /// under the same rule, beside the plain inserts of the same flush.
    /// Afterwards the handle holds the row as the database has it (the new
    /// row, or the existing one as updated) and is tracked like a loaded
    /// entity; one whose row `do_nothing` skipped leaves the session.
    ///
    /// An upsert that meets a row the session already tracks through
    /// another handle fails the flush with [`Error::AlreadyTracked`]
    /// (nothing of it is written): change that handle instead.
    ///
    /// [`Error::AlreadyTracked`]: crate::Error::AlreadyTracked
    ///
    /// ```
    /// # use orm_core::{Database, Entity, OnConflict};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Member {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     email: String, // UNIQUE
    ///     name: String,
    ///     visits: i32,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE member (id bigserial PRIMARY KEY,
    /// #     email text NOT NULL UNIQUE, name text NOT NULL, visits int NOT NULL);
    /// #     INSERT INTO member (email, name, visits) VALUES ('ann@example.com', 'Ann', 7)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let sign_up = OnConflict::columns(Member::EMAIL).do_update([Member::NAME]);
    /// let ann = session.add_on_conflict(
    ///     Member { id: 0, email: "ann@example.com".into(), name: "Ann Lee".into(), visits: 0 },
    ///     sign_up,
    /// );
    /// let bo = session.add_on_conflict(
    ///     Member { id: 0, email: "bo@example.com".into(), name: "Bo".into(), visits: 0 },
    ///     sign_up,
    /// );
    /// let stats = session.commit().await?;
    /// assert_eq!(stats.statements, 1); // one INSERT ... ON CONFLICT for both
    ///
    /// // Ann's row existed: her key and visits are the database's, her name the new one.
    /// assert_eq!(*ann.read(), Member { id: 1, email: "ann@example.com".into(), name: "Ann Lee".into(), visits: 7 });
    /// assert_eq!(bo.read().id, 3); // new; Ann's clashing insert drew 2 from the sequence
    /// # Ok(()) }
    /// ```
    pub fn add_on_conflict<E: Entity>(&mut self, mut entity: E, rule: OnConflict<E>) -> Tracked<E> {
        self.filters.fill_tenant(&mut entity);
        let registry = self.registries.of::<E>();
        let tracked = registry.new_tracked_on_conflict(entity, rule.rule);
        registry.add_pending(tracked.clone());
        tracked
    }

    /// [`add_on_conflict`](Self::add_on_conflict) for many entities, which
    /// the flush sends in one statement whatever their number.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, OnConflict};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Stock {
    ///     #[orm(primary_key)]
    ///     sku: String,
    ///     units: i32,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE stock (sku text PRIMARY KEY, units int NOT NULL);
    /// #     INSERT INTO stock VALUES ('sku-1', 5)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let counted = (1..=10_000).map(|n| Stock { sku: format!("sku-{n}"), units: 1 });
    /// let keep_first = OnConflict::key().do_nothing();
    /// let stock = session.add_all_on_conflict(counted, keep_first);
    /// let stats = session.commit().await?;
    /// assert_eq!(stats.statements, 1);
    ///
    /// assert_eq!(stock[0].read().units, 1); // not written: the row keeps 5
    /// let mut session = db.session();
    /// assert_eq!(session.get_one::<Stock>("sku-1".into()).await?.read().units, 5);
    /// assert_eq!(session.query::<Stock>().count().await?, 10_000);
    /// # Ok(()) }
    /// ```
    pub fn add_all_on_conflict<E: Entity>(
        &mut self,
        entities: impl IntoIterator<Item = E>,
        rule: OnConflict<E>,
    ) -> Vec<Tracked<E>> {
        let filters = &self.filters;
        let registry = self.registries.of::<E>();
        let added: Vec<_> = entities
            .into_iter()
            .map(|mut entity| {
                filters.fill_tenant(&mut entity);
                registry.new_tracked_on_conflict(entity, rule.rule)
            })
            .collect();
        registry.pending_inserts.reserve(added.len());
        for tracked in &added {
            registry.add_pending(tracked.clone());
        }
        added
    }
}

impl<E: Entity> OnConflict<E> {
    /// A clash is a row with the same primary key.
    pub fn key() -> ConflictTarget<E> {
        ConflictTarget { target: E::META.key_set(), entity: PhantomData }
    }

    /// A clash is a row with the same value in `column`, which must carry a
    /// unique index or constraint; name more columns of a composite one
    /// with [`ConflictTarget::and`].
    pub fn columns<V: ColumnType>(column: Column<E, V>) -> ConflictTarget<E> {
        ConflictTarget { target: column_bit(column), entity: PhantomData }
    }
}

impl<E: Entity> ConflictTarget<E> {
    /// One more column of the unique constraint that decides.
    pub fn and<V: ColumnType>(self, column: Column<E, V>) -> Self {
        ConflictTarget { target: self.target | column_bit(column), entity: PhantomData }
    }

    /// A clashing row takes the listed columns of the new row (and its
    /// version advances); the rest of it stays as it was. A `generated`
    /// column listed takes its default, as in a new row.
    pub fn do_update(self, columns: impl UpdateColumns<E>) -> OnConflict<E> {
        OnConflict { rule: ConflictRule { target: self.target, update: columns.column_set() }, entity: PhantomData }
    }

    /// A clashing row is left as it is, and the new entity is not written:
    /// the flush takes it out of the session, as [`Session::expunge`]
    /// would, instead of tracking a row the database does not hold.
    pub fn do_nothing(self) -> OnConflict<E> {
        OnConflict { rule: ConflictRule { target: self.target, update: 0 }, entity: PhantomData }
    }
}

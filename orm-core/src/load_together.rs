//! [`Load`] and [`Session::load_together`]: independent loads sent
//! together, pipelined in one round trip, their rows mapped through the
//! identity map as each load alone would.
//!
//! A web page rarely needs one query: a page of articles needs its count,
//! then the authors, tags and favorites of the articles on it. None of the
//! loads after the page depends on another, only on the page's keys, yet
//! run one after the other each waits a round trip for the one before.
//! tokio-postgres pipelines requests made on one connection without waiting
//! for their answers; the session knows which loads are independent because
//! the program hands them over together.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use tokio_postgres::Row;

use crate::connection::{Access, Outcome, Statement};
use crate::error::Result;
use crate::session::Session;
use crate::types::Param;

/// A load's rows between the two steps of its group's finish: as they
/// came, or what the load's first step made of them.
pub(crate) enum Stage {
    /// The rows of a load without a first step.
    Rows(Vec<Row>),
    /// What a load's first step gave.
    Prepared(Box<dyn Any + Send>),
}

/// The first step of a load that may hold many rows: a future that decodes
/// and tracks them, yielding to the runtime between chunks of rows (see
/// `poll_budget.rs`), and gives what the second step needs (boxed by
/// [`prepared`]). A group runs the first steps of its loads in order, then
/// every load's second step at once: the results, of any type, are not
/// held across a yield, so a group's future is `Send` whatever they are.
pub(crate) type Prepare = Box<dyn for<'s> FnOnce(&'s mut Session, Vec<Row>) -> Preparing<'s> + Send>;

/// The future of a [`Prepare`].
pub(crate) type Preparing<'s> = Pin<Box<dyn Future<Output = Result<Box<dyn Any + Send>>> + Send + 's>>;

/// What a [`Prepare`] step gives, boxed for the load's second step.
pub(crate) fn prepared<P: Send + 'static>(value: P) -> Box<dyn Any + Send> {
    Box::new(value)
}

/// The second step of a load: its result, at once, from its rows or from
/// what its first step made of them.
type Complete<T> = Box<dyn FnOnce(&mut Session, Stage) -> Result<T> + Send>;

/// What a planned load does with its rows, on the session that ran it.
struct Finish<T> {
    /// The first step, for a load that may hold many rows.
    prepare: Option<Prepare>,
    complete: Complete<T>,
}

/// Plans a load on the session, when its group runs.
type Plan<T> = Box<dyn FnOnce(&mut Session) -> Result<Planned<T>> + Send>;

/// Turns the stages of a group's loads, one per load, into its results.
type FinishGroup<T> = Box<dyn FnOnce(&mut Session, std::vec::IntoIter<Stage>) -> Result<T> + Send>;

/// A load ready to run with others in one round trip by
/// [`Session::load_together`]. Made by the builders' `*_later` methods
/// ([`Query::all_later`](crate::Query::all_later),
/// [`Query::count_later`](crate::Query::count_later),
/// [`Select::all_later`](crate::Select::all_later)) and by
/// [`Load::get_many`], [`Load::parents`] and [`Load::children`]. It holds
/// no borrow of the session, nor of anything else (a relation load keeps
/// its own handles of the entities it starts from): build several, then
/// run them together.
///
/// Nothing is sent and nothing is read from the session until it runs: the
/// statement of a relation load is planned then, after the group's
/// autoflush, from what the identity map holds at that moment, so a load
/// whose rows are all tracked already sends nothing.
#[must_use = "a load does nothing until it is run with Session::load_together"]
pub struct Load<T> {
    plan: Plan<T>,
}

/// A load's statement, if it needs one, and what it does with the rows.
pub(crate) struct Planned<T> {
    statement: Option<(Statement, Access)>,
    finish: Finish<T>,
}

impl<T: 'static> Planned<T> {
    /// A load that needs no statement: its result is ready.
    pub(crate) fn ready(value: T) -> Self
    where
        T: Send,
    {
        Planned { statement: None, finish: Finish { prepare: None, complete: Box::new(move |_, _| Ok(value)) } }
    }

    /// A load that runs `sql` and hands its rows to `finish`. The statement
    /// counts towards the [N+1 guard](crate::NPlusOne) as any load's does.
    pub(crate) fn statement(
        session: &mut Session,
        sql: String,
        params: Vec<Param>,
        access: Access,
        finish: impl FnOnce(&mut Session, Vec<Row>) -> Result<T> + Send + 'static,
    ) -> Result<Self> {
        let complete: Complete<T> = Box::new(move |session, stage| match stage {
            Stage::Rows(rows) => finish(session, rows),
            Stage::Prepared(_) => unreachable!("a load without a first step gets its rows"),
        });
        Self::with_finish(session, sql, params, access, Finish { prepare: None, complete })
    }

    /// A load that runs `sql`, hands its rows to `prepare`, a future that
    /// may yield to the runtime (see [`Prepare`]), and what that gave to
    /// `complete` for the result.
    pub(crate) fn statement_yielding<P: Send + 'static>(
        session: &mut Session,
        sql: String,
        params: Vec<Param>,
        access: Access,
        prepare: Prepare,
        complete: impl FnOnce(&mut Session, P) -> Result<T> + Send + 'static,
    ) -> Result<Self> {
        let complete: Complete<T> = Box::new(move |session, stage| match stage {
            Stage::Prepared(made) => match made.downcast::<P>() {
                Ok(made) => complete(session, *made),
                Err(_) => unreachable!("a load's first step gives what its second takes"),
            },
            Stage::Rows(_) => unreachable!("a load with a first step gets what it made"),
        });
        Self::with_finish(session, sql, params, access, Finish { prepare: Some(prepare), complete })
    }

    /// A load that runs `sql` and hands its rows to `finish`. The statement
    /// counts towards the [N+1 guard](crate::NPlusOne) as any load's does.
    fn with_finish(
        session: &mut Session,
        sql: String,
        params: Vec<Param>,
        access: Access,
        finish: Finish<T>,
    ) -> Result<Self> {
        session.record_load(&sql)?;
        let statement = Statement::new(sql, params, true);
        Ok(Planned { statement: Some((statement, access)), finish })
    }
}

impl<T: 'static> Load<T> {
    /// A load whose result is `f` applied to this load's: rows turned
    /// into the map or set a page looks them up in, say.
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use orm_core::{Database, Entity, Expr};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Book { #[orm(primary_key, generated)] id: i64, author: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE book (id bigserial PRIMARY KEY, author text NOT NULL);
    /// #     INSERT INTO book (author) VALUES ('Austen'), ('Austen'), ('Joyce')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let per_author = session
    ///     .query::<Book>()
    ///     .select((Book::AUTHOR, Expr::count_all()))
    ///     .group_by(Book::AUTHOR)
    ///     .all_later()
    ///     .map(|rows| rows.into_iter().collect::<HashMap<String, i64>>());
    /// let total = session.query::<Book>().count_later();
    /// let (per_author, total) = session.load_together((per_author, total)).await?;
    /// assert_eq!((per_author["Austen"], total), (2, 3));
    /// # Ok(()) }
    /// ```
    pub fn map<U: 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Load<U> {
        Load::new(move |session| {
            let Planned { statement, finish: Finish { prepare, complete } } = (self.plan)(session)?;
            let complete: Complete<U> = Box::new(move |session, stage| complete(session, stage).map(f));
            Ok(Planned { statement, finish: Finish { prepare, complete } })
        })
    }

    /// A load whose result is `value`, which sends nothing: for a branch
    /// of a group that has nothing to load (no viewer, say), with the same
    /// type as the load of the other branch.
    pub fn ready(value: T) -> Self
    where
        T: Send,
    {
        Load::new(move |_| Ok(Planned::ready(value)))
    }

    /// A load planned on the session when the group runs.
    pub(crate) fn new(plan: impl FnOnce(&mut Session) -> Result<Planned<T>> + Send + 'static) -> Self {
        Load { plan: Box::new(plan) }
    }

    /// A load of a statement built already (a query's): `finish` turns its
    /// rows into the result.
    pub(crate) fn of_statement(
        sql: String,
        params: Vec<Param>,
        access: Access,
        finish: impl FnOnce(&mut Session, Vec<Row>) -> Result<T> + Send + 'static,
    ) -> Self {
        Load::new(move |session| Planned::statement(session, sql, params, access, finish))
    }

    /// [`of_statement`](Self::of_statement) for a load that may hold many
    /// rows: `prepare` decodes and tracks them, yielding to the runtime,
    /// and `complete` turns what it gave into the result.
    pub(crate) fn of_statement_yielding<P: Send + 'static>(
        sql: String,
        params: Vec<Param>,
        access: Access,
        prepare: Prepare,
        complete: impl FnOnce(&mut Session, P) -> Result<T> + Send + 'static,
    ) -> Self {
        Load::new(move |session| Planned::statement_yielding(session, sql, params, access, prepare, complete))
    }
}

/// Loads that [`Session::load_together`] runs in one round trip: a tuple
/// of up to eight [`Load`]s of any result types, giving a tuple of their
/// results, or a `Vec` of loads of one type, giving a `Vec`.
pub trait LoadGroup {
    /// The results, in the order of the loads.
    type Output;

    #[doc(hidden)]
    fn plan(self, session: &mut Session) -> Result<GroupPlan<Self::Output>>;
}

/// The statements of a group (`None` for a load that needs none) and what
/// turns their rows, one `Vec` per load, into the group's results.
#[doc(hidden)]
pub struct GroupPlan<T> {
    statements: Vec<Option<(Statement, Access)>>,
    /// Each load's first step, if it has one.
    prepares: Vec<Option<Prepare>>,
    finish: FinishGroup<T>,
}

macro_rules! tuple_group {
    ($($result:ident $index:tt),+) => {
        impl<$($result: 'static),+> LoadGroup for ($(Load<$result>,)+) {
            type Output = ($($result,)+);

            fn plan(self, session: &mut Session) -> Result<GroupPlan<Self::Output>> {
                let mut statements = Vec::new();
                let mut prepares = Vec::new();
                let completes = ($({
                    let planned = (self.$index.plan)(session)?;
                    statements.push(planned.statement);
                    prepares.push(planned.finish.prepare);
                    planned.finish.complete
                },)+);
                Ok(GroupPlan {
                    statements,
                    prepares,
                    finish: Box::new(move |session, mut stages| {
                        Ok(($((completes.$index)(session, stages.next().unwrap_or(Stage::Rows(Vec::new())))?,)+))
                    }),
                })
            }
        }
    };
}

tuple_group!(A 0);
tuple_group!(A 0, B 1);
tuple_group!(A 0, B 1, C 2);
tuple_group!(A 0, B 1, C 2, D 3);
tuple_group!(A 0, B 1, C 2, D 3, F 4);
tuple_group!(A 0, B 1, C 2, D 3, F 4, G 5);
tuple_group!(A 0, B 1, C 2, D 3, F 4, G 5, H 6);
tuple_group!(A 0, B 1, C 2, D 3, F 4, G 5, H 6, I 7);

impl<T: 'static> LoadGroup for Vec<Load<T>> {
    type Output = Vec<T>;

    fn plan(self, session: &mut Session) -> Result<GroupPlan<Vec<T>>> {
        let mut statements = Vec::with_capacity(self.len());
        let mut prepares = Vec::with_capacity(self.len());
        let mut completes = Vec::with_capacity(self.len());
        for load in self {
            let planned = (load.plan)(session)?;
            statements.push(planned.statement);
            prepares.push(planned.finish.prepare);
            completes.push(planned.finish.complete);
        }
        Ok(GroupPlan {
            statements,
            prepares,
            finish: Box::new(move |session, stages| {
                completes.into_iter().zip(stages).map(|(complete, stage)| complete(session, stage)).collect()
            }),
        })
    }
}

impl Session {
    /// Runs independent loads together: after one autoflush, their
    /// statements go out pipelined on the session's connection and cost one
    /// round trip (plus one to prepare statements the connection has not
    /// seen yet), however many there are; the rows of each are mapped
    /// through the identity map as the load alone would map them, in the
    /// order of the loads. Statement counts stay what they would be one
    /// load at a time: only the waiting goes.
    ///
    /// Like any load, plain reads before the session's first write open no
    /// transaction; a locking query among them (`for_update`) begins it,
    /// with the `BEGIN` in the same round trip. The first failure, in the
    /// order of the loads, is returned, and no load's results are applied
    /// when a statement failed.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Load, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "author")]
    /// # struct Author { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "book")]
    /// # struct Book { #[orm(primary_key, generated)] id: i64, #[orm(references = Author)] author_id: i64, title: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "review")]
    /// # struct Review { #[orm(primary_key, generated)] id: i64, #[orm(references = Book)] book_id: i64, stars: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("
    /// #     CREATE TABLE author (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE book (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES author, title text NOT NULL);
    /// #     CREATE TABLE review (id bigserial PRIMARY KEY, book_id bigint NOT NULL REFERENCES book, stars int NOT NULL);
    /// #     INSERT INTO author (name) VALUES ('Austen'), ('Joyce');
    /// #     INSERT INTO book (author_id, title) VALUES (1, 'Emma'), (1, 'Persuasion'), (2, 'Ulysses');
    /// #     INSERT INTO review (book_id, stars) VALUES (1, 5), (1, 4), (3, 2);
    /// # ").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// // A page and the number of all books: one round trip.
    /// let page = session.query::<Book>().order_by(Book::ID.asc()).limit(2).all_later();
    /// let total = session.query::<Book>().count_later();
    /// let (books, total) = session.load_together((page, total)).await?;
    /// assert_eq!((books.len(), total), (2, 3));
    ///
    /// // Everything keyed by the page: one more round trip.
    /// let (authors, reviews) = session
    ///     .load_together((Load::parents(&books, Book::AUTHOR), Load::children(&books, Review::BOOK)))
    ///     .await?;
    /// assert_eq!((authors.len(), reviews.len()), (1, 2));
    /// assert_eq!(session.parent(&books[0], Book::AUTHOR)?.unwrap().read().name, "Austen");
    /// assert_eq!(session.children(&books[1], Review::BOOK)?.len(), 0);
    ///
    /// let stats = session.commit().await?;
    /// assert_eq!(stats.statements, 4);
    /// assert_eq!(stats.round_trips, 4); // each group: prepare, then run
    /// # Ok(()) }
    /// ```
    pub async fn load_together<G: LoadGroup>(&mut self, loads: G) -> Result<G::Output> {
        self.autoflush_for_query().await?;
        let GroupPlan { statements, prepares, finish } = loads.plan(self)?;
        let sent: Vec<bool> = statements.iter().map(Option::is_some).collect();
        let mut access = Access::Read;
        let statements: Vec<Statement> = statements
            .into_iter()
            .flatten()
            .map(|(statement, needs)| {
                // Loads only read; a locking one needs the transaction.
                if needs == Access::Lock {
                    access = Access::Lock;
                }
                statement
            })
            .collect();
        let mut outcomes = if statements.is_empty() {
            Vec::new()
        } else {
            let (connection, stats) = self.connection_and_stats();
            connection.run_loads(&statements, access, stats).await?
        }
        .into_iter();
        let rows: Vec<Vec<Row>> = sent
            .into_iter()
            .map(|sent| match sent.then(|| outcomes.next()).flatten() {
                Some(Outcome::Rows(rows)) => rows,
                Some(Outcome::Count(_) | Outcome::Unmatched { .. }) | None => Vec::new(),
            })
            .collect();
        let mut stages = Vec::with_capacity(rows.len());
        for (prepare, rows) in prepares.into_iter().zip(rows) {
            stages.push(match prepare {
                Some(prepare) => Stage::Prepared(prepare(self, rows).await?),
                None => Stage::Rows(rows),
            });
        }
        finish(self, stages.into_iter())
    }
}

//! Queries with the shape of SQL: projections, aggregates with GROUP BY and
//! HAVING, expressions (two columns compared, arithmetic, functions, raw
//! fragments), DISTINCT and DISTINCT ON, folded conditions, and row locks.

use std::time::Duration;

use orm_core::{Condition, Database, Entity, Error, ErrorKind, Expr};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Book {
    #[orm(primary_key, generated)]
    id: i64,
    title: String,
    author: String,
    pages: i32,
    rating: Option<f64>,
    copies: i16,
    sold: i64,
}

const SCHEMA: &str = "
    CREATE TABLE book (id bigserial PRIMARY KEY, title text NOT NULL, author text NOT NULL, pages int NOT NULL,
                       rating float8, copies int2 NOT NULL, sold int8 NOT NULL);
    INSERT INTO book (title, author, pages, rating, copies, sold) VALUES
        ('Emma', 'Austen', 474, 4.5, 3, 100),
        ('Persuasion', 'Austen', 249, NULL, 2, 50),
        ('Ulysses', 'Joyce', 730, 3.0, 1, 10),
        ('Dubliners', 'Joyce', 152, 4.0, 4, 9223372036854775000),
        ('Beloved', 'Morrison', 324, NULL, 5, 900);
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn columns_and_expressions_select_into_tuples_untracked_in_one_statement() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let rows: Vec<(i64, String, i32)> = session
        .query::<Book>()
        .select((Book::ID, Book::TITLE.upper(), Book::PAGES * 2))
        .filter(Book::AUTHOR.eq("Joyce"))
        .order_by(Book::ID.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(rows, [(3, "ULYSSES".to_owned(), 1460), (4, "DUBLINERS".to_owned(), 304)]);
    assert_eq!(session.stats().statements, 1);

    // A nullable column selects as Option; coalesce gives a plain value.
    let ratings: Vec<(Option<f64>, f64)> = session
        .query::<Book>()
        .select((Book::RATING.nullable(), Book::RATING.coalesce(0.0)))
        .order_by(Book::RATING.asc().nulls_first())
        .order_by(Book::ID.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(ratings[..3], [(None, 0.0), (None, 0.0), (Some(3.0), 3.0)]);

    // Nothing was tracked: getting a book loads it.
    let before = session.stats().statements;
    session.get_one::<Book>(1).await.unwrap();
    assert_eq!(session.stats().statements, before + 1);
}

/// Author, books, pages, copies, average pages, longest, rated books.
type AuthorStats = (String, i64, Option<i64>, Option<i64>, Option<f64>, Option<i32>, i64);

#[tokio::test]
async fn aggregates_group_and_filter_with_postgres_result_types() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let per_author: Vec<AuthorStats> = session
        .query::<Book>()
        .select((
            Book::AUTHOR,
            Expr::count_all(),
            Book::PAGES.sum(),
            Book::COPIES.sum(),
            Book::PAGES.avg(),
            Book::PAGES.max(),
            Book::RATING.count(),
        ))
        .filter(Book::AUTHOR.ne("Morrison"))
        .group_by(Book::AUTHOR)
        .having(Expr::count_all().ge(2))
        .order_by(Book::AUTHOR.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(
        per_author,
        [
            ("Austen".to_owned(), 2, Some(723), Some(5), Some(361.5), Some(474), 1),
            ("Joyce".to_owned(), 2, Some(882), Some(5), Some(441.0), Some(730), 2),
        ]
    );

    // Over no rows, sum, avg, min and max are NULL and count is 0.
    let empty: (i64, Option<i64>, Option<f64>, Option<String>) = session
        .query::<Book>()
        .select((Expr::count_all(), Book::PAGES.sum(), Book::PAGES.avg(), Book::TITLE.min()))
        .filter(Book::PAGES.gt(10_000))
        .one()
        .await
        .unwrap();
    assert_eq!(empty, (0, None, None, None));

    let authors = session.query::<Book>().select(Book::AUTHOR.count_distinct()).one().await.unwrap();
    assert_eq!(authors, 3);
}

/// Author, books, well rated books, whether one is long, whether one is unrated.
type AuthorFlags = (String, i64, i64, bool, bool);

#[tokio::test]
async fn counts_and_flags_over_the_rows_matching_a_condition_in_one_pass() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let well_rated = Expr::count_where(Book::RATING.ge(4.0));
    let per_author: Vec<AuthorFlags> = session
        .query::<Book>()
        .select((
            Book::AUTHOR,
            Expr::count_all(),
            well_rated.clone(),
            Expr::any_where(Book::PAGES.gt(700)),
            Expr::any_where(Book::RATING.is_null()),
        ))
        .group_by(Book::AUTHOR)
        .having(Expr::any_where(Book::TITLE.ne("Beloved")).eq(true))
        .order_by(well_rated.desc())
        .order_by(Book::AUTHOR.asc())
        .all()
        .await
        .unwrap();
    // A NULL rating is not "at least 4" and not counted; Morrison's only
    // book is left out by HAVING; the order is by the filtered count.
    assert_eq!(per_author, [("Austen".to_owned(), 2, 1, false, true), ("Joyce".to_owned(), 2, 1, true, false)]);
    assert_eq!(session.stats().statements, 1);

    // Over no rows the count is 0 and the flag false, never NULL; a
    // condition written by hand keeps its own parameters.
    let long = Condition::raw("t.pages > $1", vec![Box::new(10_000_i32)]);
    let none: (i64, bool) = session
        .query::<Book>()
        .select((Expr::count_where(long.clone()), Expr::any_where(long)))
        .filter(Book::AUTHOR.eq("nobody"))
        .one()
        .await
        .unwrap();
    assert_eq!(none, (0, false));
    let rated: (i64, bool) = session
        .query::<Book>()
        .select((
            Expr::count_where(Condition::raw("t.rating > $1", vec![Box::new(3.5_f64)])),
            Expr::any_where(Book::RATING.lt(1.0)),
        ))
        .one()
        .await
        .unwrap();
    assert_eq!(rated, (2, false));
}

#[tokio::test]
async fn a_sum_of_bigints_that_overflows_is_bad_data_not_a_rounded_value() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let error = session.query::<Book>().select(Book::SOLD.sum()).one().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadData, "{error}");
    let fits = session.query::<Book>().select(Book::SOLD.sum()).filter(Book::SOLD.lt(1000)).one().await.unwrap();
    assert_eq!(fits, Some(1060));
}

#[tokio::test]
async fn two_columns_compare_and_functions_and_raw_fragments_bind_their_values() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // Two columns compared, through arithmetic.
    let few_sold: Vec<String> = session
        .query::<Book>()
        .select(Book::TITLE)
        .filter(Book::SOLD.expr().lt(Book::ID * 20))
        .order_by(Book::ID.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(few_sold, ["Ulysses"]);

    // A raw fragment's own $1 follows the parameters before it.
    let scaled_title = Expr::<Book, i32>::raw("char_length(t.title) * $1", vec![Box::new(10_i32)]);
    let found: Vec<String> = session
        .query::<Book>()
        .select(Book::TITLE)
        .filter(Book::AUTHOR.ne("Nobody"))
        .filter(scaled_title.lt(Book::PAGES))
        .filter(Book::TITLE.lower().eq("emma").or(Book::PAGES.gt(700)))
        .order_by(Book::ID.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(found, ["Emma", "Ulysses"]);

    let all = session.query::<Book>().filter(Expr::<Book, _>::now().is_not_null()).count().await.unwrap();
    assert_eq!(all, 5);
    let raw_filter = Condition::raw("t.pages BETWEEN $1 AND $2", vec![Box::new(200_i32), Box::new(400_i32)]);
    let titles: Vec<String> = session
        .query::<Book>()
        .select(Book::TITLE)
        .filter(Book::AUTHOR.ne("x"))
        .filter(raw_filter)
        .order_by(Book::TITLE.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(titles, ["Beloved", "Persuasion"]);
}

#[tokio::test]
async fn folded_conditions_are_clone_and_serve_a_count_and_a_page() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let wanted = ["Austen", "Morrison"];
    let filter = Condition::any(wanted.iter().map(|author| Book::AUTHOR.eq(*author)));
    let total = session.query::<Book>().filter(filter.clone()).count().await.unwrap();
    let page = session.query::<Book>().filter(filter).order_by(Book::ID.asc()).limit(2).all().await.unwrap();
    assert_eq!((total, page.len()), (3, 2));
    assert_eq!(session.query::<Book>().filter(Condition::all([])).count().await.unwrap(), 5);
    assert_eq!(session.query::<Book>().filter(Condition::any([])).count().await.unwrap(), 0);
}

#[tokio::test]
async fn distinct_and_distinct_on() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let authors: Vec<String> =
        session.query::<Book>().select(Book::AUTHOR).distinct().order_by(Book::AUTHOR.asc()).all().await.unwrap();
    assert_eq!(authors, ["Austen", "Joyce", "Morrison"]);

    let longest =
        session.query::<Book>().distinct_on(Book::AUTHOR).order_by(Book::AUTHOR.asc()).order_by(Book::PAGES.desc());
    let titles: Vec<String> = longest.all().await.unwrap().iter().map(|b| b.read().title.clone()).collect();
    assert_eq!(titles, ["Emma", "Ulysses", "Beloved"]);
    let kept = session.query::<Book>().distinct_on(Book::AUTHOR).order_by(Book::AUTHOR.asc()).count().await.unwrap();
    assert_eq!(kept, 3);
}

/// A set-based update or delete changes the rows the query would load:
/// with `DISTINCT ON`, one per author, not every matching row.
#[tokio::test]
async fn updates_and_deletes_change_the_rows_distinct_on_keeps() {
    fn longest(session: &mut orm_core::Session) -> orm_core::Query<'_, Book> {
        session.query::<Book>().distinct_on(Book::AUTHOR).order_by(Book::AUTHOR.asc()).order_by(Book::PAGES.desc())
    }
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let marked = longest(&mut session).update([Book::COPIES.set(0_i16)]).await.unwrap();
    assert_eq!(marked, 3);
    let none_left = session.query::<Book>().filter(Book::COPIES.eq(0_i16)).order_by(Book::ID.asc()).all().await;
    let titles: Vec<String> = none_left.unwrap().iter().map(|b| b.read().title.clone()).collect();
    assert_eq!(titles.len(), 3, "{titles:?}");
    assert!(titles.iter().all(|title| ["Emma", "Ulysses", "Beloved"].contains(&title.as_str())), "{titles:?}");

    assert_eq!(longest(&mut session).delete().await.unwrap(), 3);
    assert_eq!(session.query::<Book>().count().await.unwrap(), 2, "the other two books are left");

    // A plain DISTINCT keeps every entity's row (their keys differ), and
    // does not narrow the rows picked by an order and a limit.
    let shortest = session.query::<Book>().distinct().order_by(Book::PAGES.asc()).limit(1);
    assert_eq!(shortest.delete().await.unwrap(), 1);
    assert_eq!(session.query::<Book>().count().await.unwrap(), 1);
    session.commit().await.unwrap();
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Job {
    #[orm(primary_key, generated)]
    id: i64,
    done_by: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_taking_jobs_with_skip_locked_take_each_job_exactly_once() {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE job (id bigserial PRIMARY KEY, done_by int);
                        INSERT INTO job (done_by) SELECT NULL FROM generate_series(1, 200)",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    let workers = (0..4).map(|worker: i32| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut taken = 0;
            loop {
                let mut session = db.session();
                let jobs = session
                    .query::<Job>()
                    .filter(Job::DONE_BY.is_null())
                    .order_by(Job::ID.asc())
                    .limit(5)
                    .for_update()
                    .skip_locked()
                    .all()
                    .await?;
                if jobs.is_empty() {
                    return Ok::<_, Error>(taken);
                }
                for job in &jobs {
                    job.modify(|j| j.done_by = Some(worker));
                }
                // Hold the locks a moment, so that the workers overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
                taken += jobs.len();
                session.commit().await?;
            }
        })
    });
    let taken = tokio::time::timeout(Duration::from_secs(60), futures_util::future::try_join_all(workers))
        .await
        .expect("the workers finish")
        .unwrap();
    let taken: usize = taken.into_iter().map(Result::unwrap).sum();
    assert_eq!(taken, 200, "every job taken once: none twice, none left");
    let client = test_db.client().await;
    let left: i64 = client.query_one("SELECT count(*) FROM job WHERE done_by IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn nowait_fails_at_once_on_a_locked_row() {
    let (_test_db, db) = setup().await;
    let mut holder = db.session();
    holder.query::<Book>().filter(Book::ID.eq(1)).for_update().all().await.unwrap();
    let mut other = db.session();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        other.query::<Book>().filter(Book::ID.eq(1)).for_update().nowait().all(),
    )
    .await
    .expect("NOWAIT does not wait")
    .unwrap_err();
    assert_eq!(error.sql_state().map(orm_core::tokio_postgres::error::SqlState::code), Some("55P03"), "{error}");
    holder.rollback().await.unwrap();
}

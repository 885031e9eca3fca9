//! `Query::distinct_values`: the distinct values of an indexed column, read
//! from its index a value at a time. They must be exactly the values
//! `SELECT DISTINCT` finds, under the query's filters (global ones too) and
//! page, while reading about one index entry per value rather than every
//! row.

use orm_core::{Database, Entity};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct ArticleTag {
    #[orm(primary_key)]
    article_id: i64,
    #[orm(primary_key)]
    tag: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key, generated)]
    id: i64,
    country: Option<String>,
    #[orm(soft_delete)]
    deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

const SCHEMA: &str = "
    CREATE TABLE article_tag (article_id bigint, tag varchar(20), PRIMARY KEY (article_id, tag));
    CREATE INDEX article_tag_tag ON article_tag (tag);
    INSERT INTO article_tag SELECT n, 'tag' || n % 7 FROM generate_series(1, 20000) AS n;
    INSERT INTO article_tag SELECT n, 'common' FROM generate_series(1, 20000) AS n;
    INSERT INTO article_tag VALUES (5, 'Zebra'), (6, 'apple'), (7, 'été'), (8, '');
    CREATE TABLE customer (id bigserial PRIMARY KEY, country text, deleted_at timestamptz);
    CREATE INDEX customer_country ON customer (country);
    INSERT INTO customer (country) SELECT (ARRAY['FR', 'DE', NULL, 'IT'])[n % 4 + 1] FROM generate_series(1, 4000) AS n;
    INSERT INTO customer (country, deleted_at) VALUES ('ES', now());
    ANALYZE article_tag; ANALYZE customer;
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn the_values_are_select_distinct_s_in_one_statement() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let walked = session.query::<ArticleTag>().distinct_values(ArticleTag::TAG).await.unwrap();
    assert_eq!(session.stats().statements, 1);
    let distinct: Vec<String> = session
        .query::<ArticleTag>()
        .select(ArticleTag::TAG)
        .distinct()
        .order_by(ArticleTag::TAG.asc())
        .all()
        .await
        .unwrap();
    // Ordered as the column's collation orders them, the empty string
    // and accented values included.
    assert_eq!(walked, distinct);
    assert_eq!(walked.len(), 12);
    assert!(walked.contains(&String::new()) && walked.contains(&"été".to_owned()));

    // An empty table, and a filter no row matches: no values.
    let none = session
        .query::<ArticleTag>()
        .filter(ArticleTag::ARTICLE_ID.lt(0))
        .distinct_values(ArticleTag::TAG)
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn filters_global_filters_and_the_page_apply_to_the_values() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // NULL is not a value; the soft-deleted customer's country is hidden
    // unless asked for.
    let countries = session.query::<Customer>().distinct_values(Customer::COUNTRY).await.unwrap();
    assert_eq!(countries, ["DE", "FR", "IT"]);
    let with_deleted = session.query::<Customer>().include_deleted().distinct_values(Customer::COUNTRY).await.unwrap();
    assert_eq!(with_deleted, ["DE", "ES", "FR", "IT"]);

    // The filter's values are parameters used by both steps of the walk.
    let filter = || ArticleTag::ARTICLE_ID.between(5, 8).or(ArticleTag::TAG.eq("tag3"));
    let filtered = session.query::<ArticleTag>().filter(filter()).distinct_values(ArticleTag::TAG).await.unwrap();
    let distinct: Vec<String> = session
        .query::<ArticleTag>()
        .select(ArticleTag::TAG)
        .distinct()
        .filter(filter())
        .order_by(ArticleTag::TAG.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(filtered, distinct);
    assert_eq!(filtered.len(), 10, "{filtered:?}");
    assert!(filtered.contains(&"tag3".to_owned()) && !filtered.contains(&"tag2".to_owned()));

    // Limit and offset count values, not rows; the query's order is the
    // column's own.
    let all = session.query::<ArticleTag>().distinct_values(ArticleTag::TAG).await.unwrap();
    let page = session
        .query::<ArticleTag>()
        .order_by(ArticleTag::ARTICLE_ID.desc())
        .offset(2)
        .limit(3)
        .distinct_values(ArticleTag::TAG)
        .await
        .unwrap();
    assert_eq!(page, all[2..5]);
}

#[tokio::test]
async fn a_load_together_runs_the_walk_beside_other_loads() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let tags = session.query::<ArticleTag>().distinct_values_later(ArticleTag::TAG);
    let total = session.query::<ArticleTag>().count_later();
    let (tags, total) = session.load_together((tags, total)).await.unwrap();
    assert_eq!((tags.len(), total), (12, 40004));
    assert_eq!(session.stats().statements, 2);
}

/// Index entries and table rows the current transaction read from
/// `article_tag`, and its sequential scans of the table.
async fn reads(session: &mut orm_core::Session) -> (i64, i64, i64) {
    let rows = session
        .query_rows(
            "SELECT pg_stat_get_xact_tuples_returned('article_tag_tag'::regclass),
                    pg_stat_get_xact_tuples_returned('article_tag'::regclass),
                    pg_stat_get_xact_numscans('article_tag'::regclass)",
            &[],
        )
        .await
        .unwrap();
    (rows[0].get(0), rows[0].get(1), rows[0].get(2))
}

#[tokio::test]
async fn the_walk_reads_an_index_entry_per_value_not_every_row() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // Raw SQL opens the transaction, so that the statistics of what this
    // transaction read are the walk's alone.
    let before = reads(&mut session).await;
    let walked = session.query::<ArticleTag>().distinct_values(ArticleTag::TAG).await.unwrap();
    let after = reads(&mut session).await;
    let (entries, rows, seq_scans) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    assert_eq!(seq_scans, 0, "the walk scanned the table");
    assert!(
        entries <= 2 * i64::try_from(walked.len()).unwrap() + 2,
        "{entries} index entries read for {} values",
        walked.len()
    );
    assert_eq!(rows, 0, "the table's rows were read sequentially");

    // SELECT DISTINCT, by contrast, reads all 40,004 rows.
    session.query::<ArticleTag>().select(ArticleTag::TAG).distinct().all().await.unwrap();
    let distinct = reads(&mut session).await;
    assert!(distinct.1 - after.1 + distinct.0 - after.0 >= 40_004, "{distinct:?} after {after:?}");
    session.rollback().await.unwrap();
}

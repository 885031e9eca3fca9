//! A relation's children aggregated per parent row (`Relation::count`,
//! `count_where`, `collect`, a condition as a value), selected beside a
//! join's rows by `Join::with` or in a projection, and used in filters and
//! orders: the values a user reads, one statement for the whole page, and
//! the global filters (soft deletion, the tenant) applied inside; and a
//! condition's matching rows counted beside a page (`Condition::count_rows`).

use chrono::{DateTime, Utc};
use orm_core::{Condition, Database, DatabaseConfig, Entity, Expr, Tracked};
use orm_tests::{within, TestDb};

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
struct User {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: i64,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: i64,
    #[orm(references = User)]
    author_id: Option<i64>,
    title: String,
    reply_count: i64,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Reply {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: i64,
    #[orm(references = Post)]
    post_id: i64,
    #[orm(references = User)]
    user_id: i64,
    body: String,
    spam: bool,
    #[orm(soft_delete)]
    deleted_at: Option<DateTime<Utc>>,
}

/// Tenant 1: users ann (1) and bob (2); posts 1 by ann, 2 by bob, 3 by no
/// one. Replies to post 1: ann's "a" and bob's "b" (spam), and bob's "c",
/// deleted; to post 2: ann's "d". Tenant 2: user cy (3), post 4 by cy, and
/// a reply of cy's to post 1 ("e"), which tenant 1 must not see.
const SCHEMA: &str = "
    CREATE TABLE users (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text NOT NULL);
    CREATE TABLE post (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, author_id bigint REFERENCES users,
                       title text NOT NULL, reply_count bigint NOT NULL DEFAULT 0);
    CREATE TABLE reply (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, post_id bigint NOT NULL REFERENCES post,
                        user_id bigint NOT NULL REFERENCES users, body text NOT NULL, spam bool NOT NULL,
                        deleted_at timestamptz);
    INSERT INTO users (tenant_id, name) VALUES (1, 'ann'), (1, 'bob'), (2, 'cy');
    INSERT INTO post (tenant_id, author_id, title) VALUES (1, 1, 'hello'), (1, 2, 'hi'), (1, NULL, 'anonymous'), (2, 3, 'theirs');
    INSERT INTO reply (tenant_id, post_id, user_id, body, spam, deleted_at) VALUES
        (1, 1, 1, 'a', false, NULL), (1, 1, 2, 'b', true, NULL), (1, 1, 2, 'c', false, now()),
        (1, 2, 1, 'd', false, NULL), (2, 1, 3, 'e', false, NULL);
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

/// A post's replies, non-spam replies, whether the viewer replied, and the
/// replies' bodies.
type Replies = (i64, i64, bool, Vec<String>);

fn titles<P>(rows: &[(Post, P, Replies)]) -> Vec<(&str, Replies)> {
    rows.iter().map(|(post, _, values)| (post.title.as_str(), values.clone())).collect()
}

#[tokio::test]
async fn a_page_and_its_per_row_facts_are_one_statement() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        let viewer = 2_i64;
        let page = session
            .query::<Post>()
            .filter(Post::TITLE.ne("nobody's"))
            .order_by(Post::ID.asc())
            .untracked()
            .join(Post::AUTHOR)
            .with((
                Reply::POST.count(),
                Reply::POST.count_where(Reply::SPAM.eq(false)),
                Reply::POST.any(Reply::USER_ID.eq(viewer)).into_expr(),
                Reply::POST.collect(Reply::BODY, Reply::BODY.desc()),
            ))
            .all()
            .await
            .unwrap();
        // Post 3 has no author: the inner join leaves it out. The deleted
        // reply and the other tenant's are in no figure.
        assert_eq!(
            titles(&page),
            [
                ("hello", (2, 1, true, vec!["b".to_string(), "a".to_string()])),
                ("hi", (1, 1, false, vec!["d".to_string()])),
            ]
        );
        assert_eq!(page[0].1.name, "ann");
        // One statement (its first run on the connection also prepares it).
        assert_eq!(session.stats().statements, 1);
    })
    .await;
}

#[tokio::test]
async fn tracked_and_left_joins_carry_the_values_too() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        let tracked: Vec<(Tracked<Post>, Tracked<User>, i64)> = session
            .query::<Post>()
            .order_by(Post::ID.asc())
            .join(Post::AUTHOR)
            .with(Reply::POST.count())
            .all()
            .await
            .unwrap();
        let counts: Vec<(String, String, i64)> = tracked
            .iter()
            .map(|(post, author, count)| (post.read().title.clone(), author.read().name.clone(), *count))
            .collect();
        assert_eq!(counts, [("hello".into(), "ann".into(), 2), ("hi".into(), "bob".into(), 1)]);
        // Tracked as any join's rows: the identity map hands out the same ones.
        let again = session.get_one::<Post>(1_i64).await.unwrap();
        assert!(Tracked::ptr_eq(&again, &tracked[0].0));

        let left = session
            .query::<Post>()
            .order_by(Post::ID.asc())
            .untracked()
            .left_join(Post::AUTHOR)
            .with(Reply::POST.count())
            .all_later();
        let left = session.load_together((left,)).await.unwrap().0;
        let left: Vec<(&str, Option<&str>, i64)> = left
            .iter()
            .map(|(post, author, count)| (post.title.as_str(), author.as_ref().map(|a| a.name.as_str()), *count))
            .collect();
        assert_eq!(left, [("hello", Some("ann"), 2), ("hi", Some("bob"), 1), ("anonymous", None, 0)]);
    })
    .await;
}

#[tokio::test]
async fn hidden_children_count_only_where_the_query_lifts_the_filter() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        let counted = |rows: Vec<(String, i64, Vec<String>)>| rows;
        let live = session
            .query::<Post>()
            .filter(Post::ID.eq(1_i64))
            .select((Post::TITLE, Reply::POST.count(), Reply::POST.collect(Reply::BODY, Reply::BODY.asc())))
            .all()
            .await
            .unwrap();
        assert_eq!(counted(live), [("hello".to_string(), 2, vec!["a".to_string(), "b".to_string()])]);
        let with_deleted = session
            .query::<Post>()
            .include_deleted()
            .filter(Post::ID.eq(1_i64))
            .select((Post::TITLE, Reply::POST.count(), Reply::POST.collect(Reply::BODY, Reply::BODY.asc())))
            .all()
            .await
            .unwrap();
        assert_eq!(
            counted(with_deleted),
            [("hello".to_string(), 3, vec!["a".to_string(), "b".to_string(), "c".to_string()])],
            "the deleted reply counts once the query includes deleted rows; the other tenant's never"
        );

        // Tenant 2 sees its own reply to tenant 1's post only through its
        // own posts: none of them has replies.
        let mut theirs = db.session_for_tenant(2_i64);
        let counts = theirs.query::<Post>().select((Post::TITLE, Reply::POST.count())).all().await.unwrap();
        assert_eq!(counts, [("theirs".to_string(), 0)]);
    })
    .await;
}

#[tokio::test]
async fn a_pages_total_comes_with_the_page_and_counts_what_the_page_pages_through() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        // Tenant 1's replies not by ann: bob's "b" and his deleted "c";
        // cy's "e" is tenant 2's.
        let not_anns = || Reply::USER_ID.ne(1_i64);
        let page = session
            .query::<Reply>()
            .filter(not_anns())
            .order_by(Reply::ID.asc())
            .limit(1)
            .untracked()
            .join(Reply::POST)
            .with((Reply::USER_ID.eq(2_i64).into_expr(), not_anns().count_rows()))
            .all()
            .await
            .unwrap();
        let bodies: Vec<(&str, &str, (bool, i64))> =
            page.iter().map(|(reply, post, values)| (reply.body.as_str(), post.title.as_str(), *values)).collect();
        assert_eq!(bodies, [("b", "hello", (true, 1))], "the deleted and the other tenant's count nowhere");
        assert_eq!(session.stats().statements, 1);

        let totals = |rows: &[(String, i64)]| rows.iter().map(|(_, total)| *total).collect::<Vec<_>>();
        let with_deleted = session
            .query::<Reply>()
            .include_deleted()
            .filter(not_anns())
            .select((Reply::BODY, not_anns().count_rows()))
            .all()
            .await
            .unwrap();
        assert_eq!(totals(&with_deleted), [2, 2], "lifted for the page, lifted for its total");

        // A count of another entity, beside every row of this one, and a
        // page past the end, which has no row to carry its total.
        let posts =
            session.query::<Reply>().select((Reply::BODY, Post::TITLE.ne("").count_rows())).all().await.unwrap();
        assert_eq!(totals(&posts), [3, 3, 3], "tenant 1's posts: {posts:?}");
        let past_the_end =
            session.query::<Reply>().offset(10).select((Reply::BODY, not_anns().count_rows())).all().await.unwrap();
        assert!(past_the_end.is_empty());

        let mut theirs = db.session_for_tenant(2_i64);
        let counted = theirs.query::<Post>().select((Post::TITLE, not_anns().count_rows())).all().await.unwrap();
        assert_eq!(counted, [("theirs".to_string(), 1)], "tenant 2's reply by cy");
    })
    .await;
}

#[tokio::test]
async fn aggregates_filter_and_order_rows_and_nest() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        // Ordered and filtered by a count; the deleted reply would make
        // post 1 the only one with more than one reply either way, so the
        // filter counts non-spam replies, where it decides.
        let busy = session
            .query::<Post>()
            .filter(Reply::POST.count_where(Reply::SPAM.eq(false)).ge(1_i64))
            .order_by(Reply::POST.count().desc())
            .order_by(Post::ID.asc())
            .all()
            .await
            .unwrap();
        let busy: Vec<String> = busy.iter().map(|post| post.read().title.clone()).collect();
        assert_eq!(busy, ["hello", "hi"]);

        // A count inside a count's condition: each user's posts with at
        // least two live replies (the subqueries' tables need names of
        // their own).
        let authors = session
            .query::<User>()
            .select((User::NAME, Post::AUTHOR.count_where(Reply::POST.count().ge(2_i64))))
            .order_by(User::ID.asc())
            .all()
            .await
            .unwrap();
        assert_eq!(authors, [("ann".to_string(), 1), ("bob".to_string(), 0)]);

        // A condition made a value inside a semi-join's condition: the
        // posts whose author wrote spam (bob). Its own semi-join must not
        // take the name of the table it is correlated with.
        let wrote_spam = Reply::USER.any(Reply::SPAM.eq(true)).into_expr().eq(true);
        let posts = session.query::<Post>().filter(Post::AUTHOR.has(wrote_spam)).all().await.unwrap();
        let posts: Vec<String> = posts.iter().map(|post| post.read().title.clone()).collect();
        assert_eq!(posts, ["hi"]);
    })
    .await;
}

#[tokio::test]
async fn a_set_based_update_counts_what_the_session_sees() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        let updated = session.query::<Post>().update([Post::REPLY_COUNT.set(Reply::POST.count())]).await.unwrap();
        assert_eq!(updated, 3);
        let counts = session.query::<Post>().select((Post::TITLE, Post::REPLY_COUNT)).order_by(Post::ID.asc()).all();
        // Not the deleted reply, not the other tenant's.
        assert_eq!(counts.await.unwrap(), [("hello".into(), 2), ("hi".into(), 1), ("anonymous".into(), 0)]);
    })
    .await;
}

#[tokio::test]
async fn conditions_on_null_are_false_and_an_order_by_hand_names_the_child_t() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        // Spam first, by SQL written by hand.
        let spam_first = Expr::<Reply, String>::raw("CASE WHEN t.spam THEN 0 ELSE 1 END || t.body", vec![]).asc();
        let rows = session
            .query::<Post>()
            .select((Post::TITLE, Reply::POST.collect(Reply::BODY, spam_first), Post::AUTHOR_ID.eq(1_i64).into_expr()))
            .order_by(Post::ID.asc())
            .all()
            .await
            .unwrap();
        let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            rows,
            [
                ("hello".to_owned(), strings(&["b", "a"]), true),
                ("hi".to_owned(), strings(&["d"]), false),
                // No author: the comparison is unknown, the value false.
                ("anonymous".to_owned(), strings(&[]), false),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn sql_written_by_hand_in_a_count_calls_the_child_t() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        let spam = Condition::<Reply>::raw("t.spam AND t.body <> $1", vec![Box::new("z".to_string())]);
        let counts = session
            .query::<Post>()
            .select((Post::TITLE, Reply::POST.count_where(spam)))
            .order_by(Post::ID.asc())
            .all()
            .await
            .unwrap();
        assert_eq!(counts, [("hello".to_string(), 1), ("hi".to_string(), 0), ("anonymous".to_string(), 0)]);
    })
    .await;
}

#[tokio::test]
async fn a_rows_own_query_selects_values_beside_it_and_other_rows_keys_under_the_filters() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(1_i64);
        // Each user of tenant 1 with their live replies counted and the
        // ids of the replies not bob's (a value in the selection, bound
        // before the filter's): tenant 2's "e" nowhere.
        let reply_ids = |user: i64| Reply::USER_ID.ne(user).collect_rows(Reply::ID, Reply::ID.desc());
        let users = session
            .query::<User>()
            .filter(User::NAME.ne("nobody"))
            .order_by(User::ID.asc())
            .untracked()
            .with((Reply::USER.count(), reply_ids(2)))
            .all()
            .await
            .unwrap();
        let found: Vec<(&str, i64, Vec<i64>)> =
            users.iter().map(|(user, (replies, others))| (user.name.as_str(), *replies, others.clone())).collect();
        assert_eq!(found, [("ann", 2, vec![4, 1]), ("bob", 1, vec![4, 1])]);
        assert_eq!(session.stats().statements, 1);

        // The replies not ann's: bob's deleted "c" is hidden, unless the
        // query lifts the filter, which lifts it inside too.
        let live =
            session.query::<User>().filter(User::ID.eq(2_i64)).untracked().with(reply_ids(1)).all().await.unwrap();
        assert_eq!(live[0].1, [2]);
        let with_deleted = session
            .query::<User>()
            .include_deleted()
            .filter(User::ID.eq(2_i64))
            .untracked()
            .with(reply_ids(1))
            .all()
            .await
            .unwrap();
        assert_eq!(with_deleted[0].1, [3, 2]);

        // Sent with another load in one round trip; no row, no value.
        // The first time, each statement is prepared first.
        let none = session.query::<User>().filter(User::ID.eq(3_i64)).untracked().with(reply_ids(1)).all_later();
        let count = session.query::<Post>().count_later();
        session.load_together((none, count)).await.unwrap();
        let before = session.stats();
        let none = session.query::<User>().filter(User::ID.eq(3_i64)).untracked().with(reply_ids(1)).all_later();
        let count = session.query::<Post>().count_later();
        let (none, count) = session.load_together((none, count)).await.unwrap();
        assert!(none.is_empty(), "tenant 2's user: {none:?}");
        let after = session.stats();
        assert_eq!((count, after.statements - before.statements, after.round_trips - before.round_trips), (3, 2, 1));

        let mut theirs = db.session_for_tenant(2_i64);
        let cy = theirs.query::<User>().untracked().with(reply_ids(1)).all().await.unwrap();
        assert_eq!(cy, [(User { id: 3, tenant_id: 2, name: "cy".into() }, vec![5])]);
    })
    .await;
}

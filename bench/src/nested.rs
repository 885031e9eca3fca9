//! W7: users with their posts with their comments, loaded as a nested
//! structure (diesel's `loading_associations_sequentially`), through the
//! ORM's eager loading and through the best hand-written tokio-postgres
//! code for the same job: three statements with `= ANY($1)`, grouped in
//! hash maps.

use std::collections::HashMap;

use futures_util::{pin_mut, TryStreamExt};
use orm_core::{Database, Entity, Session};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::measure::Traffic;
use crate::workloads::{check, BenchError};

/// Posts per user and comments per post.
const FAN_OUT: usize = 10;

/// A user, the root of the tree.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
pub struct User {
    /// Assigned by the database's sequence.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// A name.
    pub name: String,
}

/// A post of a user.
#[derive(Entity, Clone, Debug, PartialEq)]
pub struct Post {
    /// Assigned by the database's sequence.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// The user who wrote it.
    #[orm(references = User)]
    pub author_id: i64,
    /// A title.
    pub title: String,
}

/// A comment on a post.
#[derive(Entity, Clone, Debug, PartialEq)]
pub struct Comment {
    /// Assigned by the database's sequence.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// The post it comments on.
    #[orm(references = Post)]
    pub post_id: i64,
    /// Its text.
    pub body: String,
}

/// What both sides compute from the tree they loaded: the sum of the
/// comment ids of each user, in user order.
pub type Sums = Vec<(i64, i64)>;

/// Creates the three tables with `users` users, `FAN_OUT` posts each and
/// `FAN_OUT` comments per post, indexed on the foreign keys as an
/// application would, and returns the sums both sides must find (computed
/// by the server, before any clock starts).
pub async fn seed(db: &Database, users: usize) -> Result<Sums, BenchError> {
    let client = db.pool().get().await?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS comment, post, users;
             CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
             CREATE TABLE comment (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES post, body text NOT NULL);
             INSERT INTO users (name) SELECT 'user ' || u FROM generate_series(1, {users}) u;
             INSERT INTO post (author_id, title) SELECT u, 'post ' || p || ' of user ' || u
                 FROM generate_series(1, {users}) u, generate_series(1, {FAN_OUT}) p ORDER BY u, p;
             INSERT INTO comment (post_id, body) SELECT p.id, 'comment ' || c || ' on ' || p.title
                 FROM post p, generate_series(1, {FAN_OUT}) c ORDER BY p.id, c;
             CREATE INDEX ON post (author_id);
             CREATE INDEX ON comment (post_id);"
        ))
        .await?;
    // Alone: a multi-statement batch is one transaction, and VACUUM refuses those.
    client.batch_execute("VACUUM ANALYZE users, post, comment").await?;
    let rows = client
        .query(
            "SELECT u.id, coalesce(sum(c.id), 0)::int8 FROM users u
             LEFT JOIN post p ON p.author_id = u.id LEFT JOIN comment c ON c.post_id = p.id
             GROUP BY u.id ORDER BY u.id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect::<Result<_, tokio_postgres::Error>>()?)
}

/// W7 through the ORM: one query naming the two levels to load, then the
/// tree walked through the session's collections. Hands the session back,
/// to be dropped (with the 11,100 entities it tracks at N = 100) after the
/// clock stops.
pub async fn orm_nested(db: &Database, expected: &Sums) -> Result<(Traffic, Session), BenchError> {
    let mut session = db.session();
    let users = session
        .query::<User>()
        .order_by(User::ID.asc())
        .with_children_nested(Post::AUTHOR, |posts| posts.with_children(Comment::POST))
        .all()
        .await?;
    let mut sums = Vec::with_capacity(users.len());
    for user in &users {
        let mut sum = 0;
        for post in session.children(user, Post::AUTHOR)? {
            sum += session.children(&post, Comment::POST)?.iter().map(|comment| comment.read().id).sum::<i64>();
        }
        sums.push((user.read().id, sum));
    }
    check(&sums == expected, "every user's comments were found")?;
    check(session.stats().statements == 3, "one statement per level")?;
    let mut traffic = Traffic::default();
    traffic.add_session(session.stats());
    Ok((traffic, session))
}

/// The hand-written tree: each user with its posts, each with its comments.
pub type Tree = Vec<(User, Vec<(Post, Vec<Comment>)>)>;

/// W7 by hand: three cached statements, the second and third with the
/// keys of the level above as one array parameter, rows decoded as they
/// stream in, then grouped by foreign key in hash maps.
pub async fn raw_nested(db: &Database, expected: &Sums) -> Result<(Traffic, Tree), BenchError> {
    let client = db.pool().get().await?;
    let users = client.prepare_cached("SELECT id, name FROM users ORDER BY id").await?;
    let posts = client.prepare_cached("SELECT id, author_id, title FROM post WHERE author_id = ANY($1)").await?;
    let comments = client.prepare_cached("SELECT id, post_id, body FROM comment WHERE post_id = ANY($1)").await?;

    let users: Vec<User> =
        rows(&client, &users, &[], |row| Ok(User { id: row.try_get(0)?, name: row.try_get(1)? })).await?;
    let user_ids: Vec<i64> = users.iter().map(|user| user.id).collect();
    let posts: Vec<Post> = rows(&client, &posts, &[&user_ids], |row| {
        Ok(Post { id: row.try_get(0)?, author_id: row.try_get(1)?, title: row.try_get(2)? })
    })
    .await?;
    let post_ids: Vec<i64> = posts.iter().map(|post| post.id).collect();
    let comments: Vec<Comment> = rows(&client, &comments, &[&post_ids], |row| {
        Ok(Comment { id: row.try_get(0)?, post_id: row.try_get(1)?, body: row.try_get(2)? })
    })
    .await?;

    let mut comments_of: HashMap<i64, Vec<Comment>> = HashMap::with_capacity(posts.len());
    for comment in comments {
        comments_of.entry(comment.post_id).or_insert_with(|| Vec::with_capacity(FAN_OUT)).push(comment);
    }
    let mut posts_of: HashMap<i64, Vec<(Post, Vec<Comment>)>> = HashMap::with_capacity(users.len());
    for post in posts {
        let comments = comments_of.remove(&post.id).unwrap_or_default();
        posts_of.entry(post.author_id).or_insert_with(|| Vec::with_capacity(FAN_OUT)).push((post, comments));
    }
    let tree: Tree = users
        .into_iter()
        .map(|user| {
            let posts = posts_of.remove(&user.id).unwrap_or_default();
            (user, posts)
        })
        .collect();

    let sums: Sums = tree
        .iter()
        .map(|(user, posts)| (user.id, posts.iter().flat_map(|(_, comments)| comments).map(|c| c.id).sum()))
        .collect();
    check(&sums == expected, "every user's comments were found")?;
    let mut traffic = Traffic::default();
    traffic.add(3, 3);
    Ok((traffic, tree))
}

/// Runs `statement` and decodes its rows with `decode` as they arrive.
async fn rows<T>(
    client: &tokio_postgres::Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    decode: impl Fn(Row) -> Result<T, tokio_postgres::Error>,
) -> Result<Vec<T>, BenchError> {
    let stream = client.query_raw(statement, params.iter().copied()).await?;
    pin_mut!(stream);
    let mut decoded = Vec::new();
    while let Some(row) = stream.try_next().await? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

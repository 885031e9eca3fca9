//! `SchemaCheck`: entities compared with the database catalog, every
//! mismatch reported at once, each naming entity, field, column, expected
//! and found.

use orm_core::{create_table_sql, Database, DbEnum, Entity, Error, SchemaCheck, SchemaMismatch};
use orm_tests::TestDb;

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(pg_type = "mood")]
enum Mood {
    Happy,
    Sad,
}

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
enum Shade {
    Light,
    Dark,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
struct User {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    mood: Mood,
    bio: Option<String>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = User)]
    author_id: i64,
    title: String,
    shade: Shade,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Membership {
    #[orm(primary_key)]
    group_id: i32,
    #[orm(primary_key)]
    user_id: i64,
    #[orm(version)]
    version: i32,
}

const GOOD: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad');
    CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, mood mood NOT NULL, bio text);
    CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title varchar(200) NOT NULL,
                       shade text NOT NULL);
    CREATE TABLE membership (group_id int NOT NULL, user_id bigint NOT NULL, version int NOT NULL,
                             PRIMARY KEY (group_id, user_id));
";

fn check() -> SchemaCheck {
    SchemaCheck::new().entity::<User>().entity::<Post>().entity::<Membership>()
}

/// The mismatches a check finds in the schema `GOOD` changed by `change`.
async fn mismatches(change: &str) -> Vec<SchemaMismatch> {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(GOOD).await.unwrap();
    client.batch_execute(change).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    match check().run(&db).await {
        Ok(()) => Vec::new(),
        Err(Error::SchemaMismatch(found)) => found,
        Err(other) => panic!("not a mismatch: {other}"),
    }
}

fn described(found: &[SchemaMismatch]) -> Vec<String> {
    found.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn a_matching_schema_passes() {
    assert_eq!(mismatches("").await, []);
}

#[tokio::test]
async fn a_missing_table_or_column() {
    let found = mismatches("DROP TABLE membership; ALTER TABLE post DROP COLUMN title").await;
    assert_eq!(
        described(&found),
        [
            "Post.title (column post.title): expected a column, found none",
            "Membership (table membership): expected a table, found none (not in the search_path)",
        ]
    );
    assert_eq!(found[0].field, Some("title"));
}

#[tokio::test]
async fn a_column_type_the_field_cannot_read() {
    let found = mismatches("ALTER TABLE membership ALTER COLUMN group_id TYPE int8; ALTER TABLE post ALTER COLUMN shade TYPE mood USING 'happy'").await;
    assert_eq!(
        described(&found),
        [
            "Post.shade (column post.shade): expected a type the field reads (text), found mood",
            "Membership.group_id (column membership.group_id): expected a type the field reads (int4), found int8",
        ]
    );
}

#[tokio::test]
async fn nullability_that_disagrees_with_option() {
    let found = mismatches("ALTER TABLE users ALTER COLUMN name DROP NOT NULL, ALTER COLUMN bio SET NOT NULL").await;
    assert_eq!(
        described(&found),
        [
            "User.name (column users.name): expected NOT NULL (the field is not an Option), found nullable",
            "User.bio (column users.bio): expected nullable (the field is an Option), found NOT NULL",
        ]
    );
}

#[tokio::test]
async fn generated_columns_and_identity() {
    let found = mismatches(
        "ALTER TABLE post ALTER COLUMN id DROP DEFAULT;
         ALTER TABLE membership ALTER COLUMN version ADD GENERATED ALWAYS AS IDENTITY",
    )
    .await;
    assert_eq!(
        described(&found),
        [
            "Post.id (column post.id): expected a default or an identity (the field is generated), found neither",
            "Membership.version (column membership.version): expected a column the application writes, found GENERATED ALWAYS AS IDENTITY (mark the field generated)",
        ]
    );
}

#[tokio::test]
async fn a_primary_key_or_foreign_key_that_differs() {
    let found = mismatches(
        "ALTER TABLE membership DROP CONSTRAINT membership_pkey, ADD PRIMARY KEY (group_id);
         ALTER TABLE post DROP CONSTRAINT post_author_id_fkey",
    )
    .await;
    assert_eq!(
        described(&found),
        [
            "Post.author_id (column post.author_id): expected a foreign key to users, found none",
            "Membership (table membership): expected primary key (group_id, user_id), found (group_id)",
        ]
    );
}

#[tokio::test]
async fn every_mismatch_is_in_one_error_message() {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute("CREATE TABLE users (id int PRIMARY KEY)").await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    let error = check().run(&db).await.unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("the database does not match the entities:\n"), "{message}");
    for expected in
        ["User.id", "User.name", "User.mood", "User.bio", "Post (table post)", "Membership (table membership)"]
    {
        assert!(message.contains(expected), "{expected} in {message}");
    }
    assert_eq!(error.kind(), orm_core::ErrorKind::SchemaMismatch);
}

/// Generate once, check at start-up: the DDL the entities imply creates a
/// schema that the check passes and the session writes to.
#[tokio::test]
async fn the_generated_ddl_passes_the_check() {
    let test_db = TestDb::new().await;
    let ddl = [create_table_sql::<User>(), create_table_sql::<Post>(), create_table_sql::<Membership>()].join("\n");
    assert!(ddl.starts_with("CREATE TYPE mood AS ENUM ('happy', 'sad');\nCREATE TABLE \"users\""), "{ddl}");
    test_db.client().await.batch_execute(&ddl).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    check().run(&db).await.unwrap();

    let mut session = db.session();
    let user = session.add(User { id: 0, name: "ann".into(), mood: Mood::Sad, bio: None });
    let post = session.add(Post { id: 0, author_id: 0, title: "hi".into(), shade: Shade::Dark });
    session.set_parent(&post, Post::AUTHOR, &user).unwrap();
    session.add(Membership { group_id: 1, user_id: 1, version: 0 });
    session.commit().await.unwrap();
    assert_eq!(post.read().author_id, user.read().id);
}

/// A domain's column is checked as its base type, which PostgreSQL sends
/// its values as, and its `NOT NULL` counts; an extension's type that the
/// field reads by name (`citext` for `String`) fits.
#[tokio::test]
async fn a_domain_is_checked_as_its_base_type() {
    let found = mismatches(
        "CREATE EXTENSION citext;
         ALTER TABLE users ALTER COLUMN name TYPE citext;
         CREATE DOMAIN headline AS varchar(200) NOT NULL CHECK (VALUE <> '');
         ALTER TABLE post ALTER COLUMN title TYPE headline, ALTER COLUMN title DROP NOT NULL;
         CREATE DOMAIN required_text AS text NOT NULL;
         ALTER TABLE users ALTER COLUMN bio TYPE required_text",
    )
    .await;
    assert_eq!(
        described(&found),
        ["User.bio (column users.bio): expected nullable (the field is an Option), found NOT NULL"]
    );
}

/// A stored generated column refuses what an insert or update writes to
/// it: its field must be `generated`.
#[tokio::test]
async fn a_stored_generated_column_the_field_would_write() {
    let found = mismatches(
        "ALTER TABLE post DROP COLUMN title,
             ADD COLUMN title text NOT NULL GENERATED ALWAYS AS ('post ' || id) STORED",
    )
    .await;
    assert_eq!(
        described(&found),
        ["Post.title (column post.title): expected a column the application writes, found GENERATED ALWAYS AS (...) STORED (mark the field generated)"]
    );
}

/// An entity read from a view: the view has no primary key nor foreign
/// keys, and its columns read as nullable, none of which is a mismatch.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "post_summary")]
struct PostSummary {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = User)]
    author_id: i64,
    title: String,
}

#[tokio::test]
async fn an_entity_on_a_view_passes() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(GOOD).await.unwrap();
    client.batch_execute("CREATE VIEW post_summary AS SELECT id, author_id, title FROM post").await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    SchemaCheck::new().entity::<PostSummary>().run(&db).await.expect("a view passes");
    client
        .batch_execute("DROP VIEW post_summary; CREATE VIEW post_summary AS SELECT id, author_id FROM post")
        .await
        .unwrap();
    let error = SchemaCheck::new().entity::<PostSummary>().run(&db).await.unwrap_err();
    assert!(error.to_string().contains("PostSummary.title"), "a missing column is still found: {error}");
}

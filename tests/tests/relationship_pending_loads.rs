//! Loading and reading relations while parents are still pending: batch
//! loads see the keys the autoflush generates, and a link to a pending
//! parent decides which collection a child is in.

use orm_core::{Database, Entity, Tracked};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
struct User {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = User)]
    author_id: i64,
    title: String,
}

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
             INSERT INTO users (name) VALUES ('ann');
             INSERT INTO post (author_id, title) VALUES (1, 'ann 1')",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn load_children_of_a_pending_parent_finds_the_children_the_autoflush_inserted() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let bob = session.add(User { id: 0, name: "bob".into() });
    let post = session.add(Post { id: 0, author_id: 0, title: "bob 1".into() });
    session.set_parent(&post, Post::AUTHOR, &bob).unwrap();

    let loaded = session.load_children(std::slice::from_ref(&bob), Post::AUTHOR).await.unwrap();
    assert_eq!(bob.read().id, 2, "the autoflush inserted bob");
    assert_eq!(loaded.len(), 1, "the query used bob's generated key, not the placeholder");
    assert!(Tracked::ptr_eq(&loaded[0], &post));
    let children = session.children(&bob, Post::AUTHOR).unwrap();
    assert_eq!(children.len(), 1);
}

#[tokio::test]
async fn load_parents_of_children_linked_to_pending_parents_returns_those_parents() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let ann = session.get_one::<User>(1).await.unwrap();
    let old = session.get_one::<Post>(1).await.unwrap();
    let bob = session.add(User { id: 0, name: "bob".into() });
    let new = session.add(Post { id: 0, author_id: 0, title: "bob 1".into() });
    session.set_parent(&new, Post::AUTHOR, &bob).unwrap();

    let parents = session.load_parents(&[old, new], Post::AUTHOR).await.unwrap();
    assert_eq!(parents.len(), 2, "ann, and bob once the autoflush gave him a key");
    assert!(Tracked::ptr_eq(&parents[0], &ann));
    assert!(Tracked::ptr_eq(&parents[1], &bob));
}

#[tokio::test]
async fn load_parents_without_pending_links_does_not_flush() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let posts = session.query::<Post>().all().await.unwrap();
    session.get_one::<User>(1).await.unwrap();
    // Unrelated pending work stays pending: nothing needs a key from it.
    session.add(User { id: 0, name: "bob".into() });
    let before = session.stats();
    let parents = session.load_parents(&posts, Post::AUTHOR).await.unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(session.stats(), before, "every parent is tracked: no SQL at all");
}

#[tokio::test]
async fn a_child_moved_to_a_pending_parent_leaves_its_old_parents_collection_at_once() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ann = session.get_one::<User>(1).await.unwrap();
    session.load_children(std::slice::from_ref(&ann), Post::AUTHOR).await.unwrap();
    let post = session.children(&ann, Post::AUTHOR).unwrap().pop().expect("ann's post");
    let bob = session.add(User { id: 0, name: "bob".into() });
    session.set_parent(&post, Post::AUTHOR, &bob).unwrap();

    assert_eq!(post.read().author_id, 1, "the foreign key waits for bob's key");
    assert!(session.children(&ann, Post::AUTHOR).unwrap().is_empty(), "the link wins over the old key");
    assert!(Tracked::ptr_eq(&session.parent(&post, Post::AUTHOR).unwrap().unwrap(), &bob));

    session.commit().await.unwrap();
    let author: i64 =
        test_db.client().await.query_one("SELECT author_id FROM post WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(author, 2);
}

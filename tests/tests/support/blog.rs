//! Users, their posts, and the posts' comments: the entities of the tests
//! of relationships and of flushes across them.

use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
pub struct User {
    #[orm(primary_key, generated)]
    pub id: i64,
    pub name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
pub struct Post {
    #[orm(primary_key, generated)]
    pub id: i64,
    #[orm(references = User)]
    pub author_id: i64,
    pub title: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
pub struct Comment {
    #[orm(primary_key, generated)]
    pub id: i64,
    #[orm(references = Post, on_delete = "cascade")]
    pub post_id: i64,
    pub body: String,
}

pub const SCHEMA: &str = "
    CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users, title text NOT NULL);
    CREATE TABLE comment (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES post, body text NOT NULL);
";

pub fn user(name: &str) -> User {
    User { id: 0, name: name.into() }
}

pub fn post(author_id: i64, title: &str) -> Post {
    Post { id: 0, author_id, title: title.into() }
}

use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct User {
    #[orm(primary_key)]
    id: i64,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = User)]
    author_id: i64,
    author: String,
    #[orm(references = User, relation = "author")]
    editor_id: i64,
}

fn main() {}

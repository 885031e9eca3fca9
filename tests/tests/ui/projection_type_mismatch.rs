use orm_core::{Database, Entity, Expr, Projection};

#[derive(Entity, Clone, Debug, PartialEq)]
struct Book {
    #[orm(primary_key)]
    id: i64,
    author: String,
}

#[derive(Projection)]
struct AuthorStats {
    author: String,
    books: i32, // count is an i64
}

async fn stats(db: &Database) -> orm_core::Result<Vec<AuthorStats>> {
    let mut session = db.session();
    session.query::<Book>().select((Book::AUTHOR, Expr::count_all())).group_by(Book::AUTHOR).all_as().await
}

fn main() {
    drop(stats);
}

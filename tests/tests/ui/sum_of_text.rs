use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Book {
    #[orm(primary_key)]
    id: i64,
    title: String,
}

fn main() {
    let _ = Book::TITLE.sum();
}

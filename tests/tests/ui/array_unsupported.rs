use orm_core::Entity;

// Arrays have one dimension, and a key is no array.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Grid {
    #[orm(primary_key)]
    id: Vec<i32>,
    rows: Vec<Vec<i32>>,
}

fn main() {}

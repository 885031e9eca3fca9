use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    tags: Vec<String>,
    scores: Option<Vec<i32>>,
}

// The array filters take the element type exactly, as comparisons do.
fn main() {
    let _ = Post::TAGS.contains([1, 2]);
    let _ = Post::TAGS.has(7);
    let _ = Post::SCORES.overlaps([1_i64]);
    let _ = Post::SCORES.has("7");
    // `like` is for text columns, not text arrays.
    let _ = Post::TAGS.like("a%");
}

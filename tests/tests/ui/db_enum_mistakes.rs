use orm_core::DbEnum;

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
enum Status {
    Draft,
    #[orm(rename = "draft")]
    Preview,
    #[orm(rename = "live", rename = "published")]
    Published,
    #[orm(label = "gone")]
    Archived,
}

fn main() {}

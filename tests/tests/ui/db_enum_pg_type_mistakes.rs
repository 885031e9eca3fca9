use orm_core::DbEnum;

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(pg_type = "Mood; DROP TABLE x")]
enum Mood {
    Happy,
}

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(pg_type = "mood", pg_type = "feeling")]
enum Feeling {
    Fine,
}

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(sql_type = "mood")]
enum Temper {
    Calm,
}

fn main() {}

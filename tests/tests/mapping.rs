//! Mapping attributes: table and column names (including ones that need
//! quoting), skipped fields, SQL type overrides, composite and client-assigned
//! keys, version columns, and changed primary keys.

mod support;

use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;
use uuid::Uuid;

/// No `table` attribute: the table is the struct's name in snake case.
#[derive(Entity, Clone, Debug, PartialEq)]
struct OrderLine {
    #[orm(primary_key, generated)]
    id: i64,
    product: String,
    quantity: i32,
}

/// A reserved word as the table, and column names that only work quoted.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "user")]
struct Member {
    #[orm(primary_key, generated, column = "Member ID")]
    id: i64,
    #[orm(column = "order")]
    position: i32,
    #[orm(column = "Display Name")]
    display_name: String,
    #[orm(column = "isAdmin")]
    admin: bool,
    #[orm(column = "user")]
    login: Option<String>,
    #[orm(column = "nick\"name")]
    nickname: String,
}

/// A field the table does not have.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "draft")]
struct Draft {
    #[orm(primary_key, generated)]
    id: i32,
    body: String,
    #[orm(skip)]
    scratch: Vec<String>,
}

/// Text sent as `varchar[]` instead of the default `text[]`, also for the key.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "product")]
struct Product {
    #[orm(primary_key, sql_type = "varchar")]
    sku: String,
    #[orm(sql_type = "varchar")]
    title: String,
    price_cents: i64,
}

/// A two-column primary key.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "enrollment")]
struct Enrollment {
    #[orm(primary_key)]
    student_id: i32,
    #[orm(primary_key)]
    course: String,
    grade: Option<i16>,
}

/// A key the application assigns.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "api_key")]
struct ApiKey {
    #[orm(primary_key)]
    id: Uuid,
    label: String,
}

/// A versioned entity with an `i16` counter.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "document")]
struct Document {
    #[orm(primary_key, generated)]
    id: i32,
    title: String,
    #[orm(version)]
    revision: i16,
}

const SCHEMA: &str = r#"
    CREATE TABLE order_line (id bigserial PRIMARY KEY, product text NOT NULL, quantity int NOT NULL);
    CREATE TABLE "user" ("Member ID" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "order" int NOT NULL,
                         "Display Name" text NOT NULL, "isAdmin" boolean NOT NULL, "user" text,
                         "nick""name" text NOT NULL);
    CREATE TABLE draft (id serial PRIMARY KEY, body text NOT NULL);
    CREATE TABLE product (sku varchar(32) PRIMARY KEY, title varchar(100) NOT NULL, price_cents bigint NOT NULL);
    CREATE TABLE enrollment (student_id int, course text, grade smallint, PRIMARY KEY (student_id, course));
    CREATE TABLE api_key (id uuid PRIMARY KEY, label text NOT NULL);
    CREATE TABLE document (id serial PRIMARY KEY, title text NOT NULL, revision smallint NOT NULL);
"#;

async fn setup() -> (TestDb, Database) {
    let (test_db, db) = support::setup().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("create the mapping tables");
    (test_db, db)
}

#[tokio::test]
async fn the_default_table_name_is_the_struct_name_in_snake_case() {
    let (test_db, db) = setup().await;
    assert_eq!(OrderLine::META.table, "order_line");
    let mut session = db.session();
    let line = session.add(OrderLine { id: 0, product: "tea".to_owned(), quantity: 3 });
    session.commit().await.expect("insert into order_line");

    let row = test_db.client().await.query_one("SELECT id, product, quantity FROM order_line", &[]).await.unwrap();
    assert_eq!(
        OrderLine { id: row.get(0), product: row.get(1), quantity: row.get(2) },
        OrderLine { id: line.read().id, product: "tea".to_owned(), quantity: 3 }
    );
}

#[tokio::test]
async fn renamed_tables_and_columns_are_quoted_everywhere() {
    let (test_db, db) = setup().await;
    assert_eq!(Member::META.table, "user");
    assert_eq!(Member::DISPLAY_NAME.name(), "Display Name");
    let names: Vec<_> = Member::META.columns.iter().map(|c| (c.field, c.name)).collect();
    assert_eq!(
        names,
        vec![
            ("id", "Member ID"),
            ("position", "order"),
            ("display_name", "Display Name"),
            ("admin", "isAdmin"),
            ("login", "user"),
            ("nickname", "nick\"name"),
        ]
    );

    let member = |position, name: &str| Member {
        id: 0,
        position,
        display_name: name.to_owned(),
        admin: false,
        login: None,
        nickname: format!("{name}!"),
    };
    let mut session = db.session();
    let added = session.add_all([member(1, "Ann"), member(2, "Bo"), member(3, "Cy")]);
    session.commit().await.expect("insert with RETURNING \"Member ID\"");
    let ids: Vec<i64> = added.iter().map(|m| m.read().id).collect();

    let mut session = db.session();
    let ann = session.get_one::<Member>(ids[0]).await.expect("get by a quoted key column");
    assert_eq!(ann.get(), Member { id: ids[0], ..member(1, "Ann") });
    let many = session.get_many::<Member>(&[ids[2], ids[1]]).await.expect("get_many by a quoted key column");
    assert_eq!(many.iter().map(|m| m.read().position).collect::<Vec<_>>(), vec![3, 2]);
    let found = session
        .query::<Member>()
        .filter(Member::POSITION.ge(2).and(Member::LOGIN.is_null()).and(Member::NICKNAME.like("%!")))
        .order_by(Member::DISPLAY_NAME.desc())
        .all()
        .await
        .expect("filter and order on quoted columns");
    assert!(Tracked::ptr_eq(&found[0], &many[0]), "Cy first, and the identity map's instance");
    assert_eq!(found.len(), 2);

    {
        let mut ann = ann.write();
        ann.display_name = "Ann Lee".to_owned();
        ann.admin = true;
        ann.login = Some("ann".to_owned());
        ann.nickname = "annie".to_owned();
    }
    session.delete(&many[1]).unwrap();
    session.commit().await.expect("update and delete through quoted columns");

    let rows = test_db
        .client()
        .await
        .query(r#"SELECT "Member ID", "order", "Display Name", "isAdmin", "user", "nick""name" FROM "user" ORDER BY "order""#, &[])
        .await
        .unwrap();
    let stored: Vec<Member> = rows
        .iter()
        .map(|r| Member {
            id: r.get(0),
            position: r.get(1),
            display_name: r.get(2),
            admin: r.get(3),
            login: r.get(4),
            nickname: r.get(5),
        })
        .collect();
    let updated_ann = Member {
        id: ids[0],
        position: 1,
        display_name: "Ann Lee".to_owned(),
        admin: true,
        login: Some("ann".to_owned()),
        nickname: "annie".to_owned(),
    };
    assert_eq!(stored, vec![updated_ann, Member { id: ids[2], ..member(3, "Cy") }]);
}

#[tokio::test]
async fn a_skipped_field_is_never_written_and_loads_as_default() {
    let (test_db, db) = setup().await;
    assert_eq!(Draft::META.columns.iter().map(|c| c.name).collect::<Vec<_>>(), vec!["id", "body"]);

    // The table has no `scratch` column, so writing it would fail.
    let mut session = db.session();
    let added = session.add(Draft { id: 0, body: "first".to_owned(), scratch: vec!["kept in memory".to_owned()] });
    session.commit().await.expect("insert without the skipped field");
    assert_eq!(added.read().scratch, vec!["kept in memory".to_owned()], "the handle keeps its own value");
    let id = added.read().id;

    let mut session = db.session();
    let draft = session.get_one::<Draft>(id).await.unwrap();
    assert_eq!(draft.get(), Draft { id, body: "first".to_owned(), scratch: Vec::new() });

    draft.write().scratch.push("only the skipped field changed".to_owned());
    assert!(!draft.is_modified());
    let before = session.stats();
    session.flush().await.expect("flush");
    assert_eq!(session.stats(), before, "a change to a skipped field costs no SQL");

    {
        let mut draft = draft.write();
        draft.body = "second".to_owned();
        draft.scratch.push("and the body".to_owned());
    }
    session.commit().await.expect("update without the skipped field");
    let body: String =
        test_db.client().await.query_one("SELECT body FROM draft WHERE id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(body, "second");
}

#[tokio::test]
async fn sql_type_overrides_the_array_cast() {
    let (test_db, db) = setup().await;
    let types: Vec<_> = Product::META.columns.iter().map(|c| c.sql_type).collect();
    assert_eq!(types, vec!["varchar", "varchar", "int8"]);

    let product = |sku: &str, title: &str| Product { sku: sku.to_owned(), title: title.to_owned(), price_cents: 250 };
    let mut session = db.session();
    session.add_all([product("A-1", "Apple"), product("B-2", "Banana")]);
    session.flush().await.expect("insert");
    let loaded = session.get_many::<Product>(&["B-2".to_owned(), "A-1".to_owned(), "C-3".to_owned()]).await.unwrap();
    assert_eq!(
        loaded.iter().map(Tracked::get).collect::<Vec<_>>(),
        vec![product("B-2", "Banana"), product("A-1", "Apple")]
    );
    loaded[0].write().title = "Plantain".to_owned();
    session.flush().await.expect("update");

    // The statements this session prepared on its connection.
    let rows = session
        .query_rows(
            "SELECT statement FROM pg_prepared_statements WHERE statement ~ '^(INSERT|WITH written AS \\(UPDATE)'",
            &[],
        )
        .await
        .unwrap();
    let statements: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(statements.len(), 2, "{statements:?}");
    for statement in &statements {
        assert!(statement.contains("::varchar[]") && !statement.contains("::text[]"), "{statement}");
    }
    session.commit().await.expect("commit");

    let title: String =
        test_db.client().await.query_one("SELECT title FROM product WHERE sku = 'B-2'", &[]).await.unwrap().get(0);
    assert_eq!(title, "Plantain");
}

#[tokio::test]
async fn a_composite_key_supports_get_get_many_update_and_delete() {
    let (test_db, db) = setup().await;
    let enrollment = |student_id, course: &str, grade| Enrollment { student_id, course: course.to_owned(), grade };
    let mut session = db.session();
    session.add_all([
        enrollment(1, "math", Some(4)),
        enrollment(1, "art", None),
        enrollment(2, "math", Some(2)),
        enrollment(2, "art", Some(1)),
    ]);
    session.commit().await.expect("insert");

    let mut session = db.session();
    let one = session.get_one::<Enrollment>((2, "math".to_owned())).await.expect("get by tuple");
    assert_eq!(one.get(), enrollment(2, "math", Some(2)));
    assert!(session.get::<Enrollment>((3, "math".to_owned())).await.unwrap().is_none());

    let before = session.stats();
    let keys = [(2, "art".to_owned()), (9, "art".to_owned()), (1, "math".to_owned()), (1, "art".to_owned())];
    let many = session.get_many::<Enrollment>(&keys).await.expect("get_many by tuples");
    assert_eq!(session.stats().statements - before.statements, 1, "all keys in one statement");
    assert_eq!(
        many.iter().map(Tracked::get).collect::<Vec<_>>(),
        vec![enrollment(2, "art", Some(1)), enrollment(1, "math", Some(4)), enrollment(1, "art", None)]
    );

    many[2].write().grade = Some(3);
    one.write().grade = None;
    session.delete(&many[0]).unwrap();
    session.commit().await.expect("update and delete by composite key");

    let rows = test_db
        .client()
        .await
        .query("SELECT student_id, course, grade FROM enrollment ORDER BY student_id, course", &[])
        .await
        .unwrap();
    let stored: Vec<Enrollment> =
        rows.iter().map(|r| Enrollment { student_id: r.get(0), course: r.get(1), grade: r.get(2) }).collect();
    assert_eq!(
        stored,
        vec![enrollment(1, "art", Some(3)), enrollment(1, "math", Some(4)), enrollment(2, "math", None)]
    );
}

#[tokio::test]
async fn a_client_assigned_key_is_inserted_as_given() {
    let (test_db, db) = setup().await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let mut session = db.session();
    let added = session.add(ApiKey { id: first, label: "ci".to_owned() });
    session.add(ApiKey { id: second, label: "deploy".to_owned() });
    session.commit().await.expect("insert");
    assert_eq!(added.read().id, first);

    let mut session = db.session();
    let loaded = session.get_one::<ApiKey>(second).await.unwrap();
    loaded.write().label = "release".to_owned();
    session.commit().await.expect("update");

    let rows = test_db.client().await.query("SELECT id, label FROM api_key", &[]).await.unwrap();
    let mut stored: Vec<(Uuid, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    stored.sort();
    let mut expected = vec![(first, "ci".to_owned()), (second, "release".to_owned())];
    expected.sort();
    assert_eq!(stored, expected);

    let mut session = db.session();
    session.add(ApiKey { id: first, label: "again".to_owned() });
    let error = session.commit().await.expect_err("the key is taken");
    assert!(matches!(error, Error::UniqueViolation { .. }), "{error:?}");
}

#[tokio::test]
async fn updates_bump_the_version_on_the_object_and_in_the_database() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    let revision = |id: i32| {
        let client = &client;
        async move {
            client.query_one("SELECT revision FROM document WHERE id = $1", &[&id]).await.unwrap().get::<_, i16>(0)
        }
    };

    let mut session = db.session();
    let added = session.add(Document { id: 0, title: "draft".to_owned(), revision: 0 });
    session.commit().await.expect("insert");
    let id = added.read().id;
    assert_eq!((added.read().revision, revision(id).await), (0, 0));

    let mut session = db.session();
    let document = session.get_one::<Document>(id).await.unwrap();
    document.write().title = "final".to_owned();
    session.flush().await.expect("update");
    assert_eq!(document.read().revision, 1);
    document.write().title = "final, really".to_owned();
    session.commit().await.expect("second update");
    assert_eq!(document.read().revision, 2);
    assert_eq!(revision(id).await, 2);

    let mut session = db.session();
    let reloaded = session.get_one::<Document>(id).await.unwrap();
    assert_eq!(reloaded.get(), Document { id, title: "final, really".to_owned(), revision: 2 });
}

#[tokio::test]
async fn changing_a_primary_key_is_an_error() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let line = session.add(OrderLine { id: 0, product: "tea".to_owned(), quantity: 1 });
    session.add(Enrollment { student_id: 1, course: "math".to_owned(), grade: None });
    session.commit().await.expect("insert");
    let id = line.read().id;

    let mut session = db.session();
    let line = session.get_one::<OrderLine>(id).await.unwrap();
    {
        let mut line = line.write();
        line.id += 100;
        line.quantity = 5;
    }
    let error = session.flush().await.expect_err("a changed key");
    let Error::PrimaryKeyChanged { entity, key } = &error else { panic!("expected PrimaryKeyChanged, got {error:?}") };
    assert_eq!(
        (*entity, key.as_str()),
        ("OrderLine", &*id.to_string()),
        "the error names the entity and its original key"
    );
    let error = session.commit().await.expect_err("commit flushes the same change");
    assert!(matches!(error, Error::PrimaryKeyChanged { entity: "OrderLine", .. }), "{error:?}");

    let mut session = db.session();
    let enrollment = session.get_one::<Enrollment>((1, "math".to_owned())).await.unwrap();
    enrollment.write().course = "art".to_owned();
    let error = session.commit().await.expect_err("a changed part of a composite key");
    let Error::PrimaryKeyChanged { entity, key } = &error else { panic!("expected PrimaryKeyChanged, got {error:?}") };
    assert_eq!(
        (*entity, key.as_str()),
        ("Enrollment", "(1, \"math\")"),
        "the error names the entity and its original key"
    );

    let client = test_db.client().await;
    let line: (i64, i32) =
        client.query_one("SELECT id, quantity FROM order_line", &[]).await.map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!(line, (id, 1), "nothing of the failed flush was written");
    let course: String = client.query_one("SELECT course FROM enrollment", &[]).await.unwrap().get(0);
    assert_eq!(course, "math");
}

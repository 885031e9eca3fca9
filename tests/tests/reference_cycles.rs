//! Tables that reference each other: a nullable foreign key on the cycle is
//! inserted as NULL and set by a post-update, with keys the database
//! generates too, and cleared before rows on the cycle are deleted.

use orm_core::{Database, DatabaseConfig, Entity, Error, Tracked};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "team")]
struct Team {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    /// Nullable: a team may have no captain yet, which breaks the cycle.
    #[orm(references = Player)]
    captain_id: Option<i64>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "player")]
struct Player {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    #[orm(references = Team)]
    team_id: i64,
}

/// A table whose only column besides its generated key is the one a
/// post-update sets: its insert has no column to write at all.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "node")]
struct Node {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Edge)]
    first_edge_id: Option<i64>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "edge")]
struct Edge {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Node)]
    node_id: i64,
}

const SCHEMA: &str = "
    CREATE TABLE team (id bigserial PRIMARY KEY, name text NOT NULL, captain_id bigint);
    CREATE TABLE player (id bigserial PRIMARY KEY, name text NOT NULL, team_id bigint NOT NULL REFERENCES team);
    ALTER TABLE team ADD FOREIGN KEY (captain_id) REFERENCES player;
    CREATE TABLE node (id bigserial PRIMARY KEY, first_edge_id bigint);
    CREATE TABLE edge (id bigserial PRIMARY KEY, node_id bigint NOT NULL REFERENCES node);
    ALTER TABLE node ADD FOREIGN KEY (first_edge_id) REFERENCES edge;
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

/// Each team with its players (`team N` has `team N player M`), its captain
/// the first of them, all pending, linked through `set_parent`.
fn add_teams(
    session: &mut orm_core::Session,
    teams: usize,
    players: usize,
) -> Vec<(Tracked<Team>, Vec<Tracked<Player>>)> {
    (0..teams)
        .map(|t| {
            let team = session.add(Team { id: 0, name: format!("team {t}"), captain_id: None });
            let members: Vec<_> = (0..players)
                .map(|p| {
                    let player = session.add(Player { id: 0, name: format!("team {t} player {p}"), team_id: 0 });
                    session.set_parent(&player, Player::TEAM, &team).unwrap();
                    player
                })
                .collect();
            session.set_parent(&team, Team::CAPTAIN, &members[0]).unwrap();
            (team, members)
        })
        .collect()
}

#[tokio::test]
async fn a_cycle_with_generated_keys_is_broken_with_a_post_update() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let teams = add_teams(&mut session, 100, 5);
    let stats = session.commit().await.unwrap();

    assert_eq!(stats.statements, 3, "INSERT teams without captains, INSERT players, UPDATE the captains");
    let client = test_db.client().await;
    let rows = client
        .query(
            "SELECT t.id, t.name, c.name FROM team t JOIN player c ON c.id = t.captain_id AND c.team_id = t.id \
             ORDER BY t.id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100, "every team has its own player as captain");
    for (row, (team, members)) in rows.iter().zip(&teams) {
        assert_eq!(row.get::<_, i64>(0), team.read().id);
        assert_eq!(row.get::<_, String>(2), format!("{} player 0", row.get::<_, String>(1)));
        assert_eq!(team.read().captain_id, Some(members[0].read().id), "the object has the key too");
        assert!(members.iter().all(|player| player.read().team_id == team.read().id));
    }
    let misfiled: i64 = client
        .query_one(
            "SELECT count(*) FROM player p JOIN team t ON t.id = p.team_id WHERE p.name NOT LIKE t.name || ' %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(misfiled, 0);
}

#[tokio::test]
async fn a_cycle_with_generated_keys_costs_three_round_trips_whatever_its_size() {
    let (_test_db, db) = setup().await;
    for teams in [2, 50] {
        let mut session = db.session();
        add_teams(&mut session, teams, 3);
        let stats = session.commit().await.unwrap();
        // The first commit also prepares the statements on the connection,
        // which the second one reuses.
        if teams == 50 {
            assert_eq!(stats.round_trips, 3, "teams; players; the post-update with COMMIT");
        }
    }
}

#[tokio::test]
async fn after_the_post_update_the_session_tracks_the_rows_as_written() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let teams = add_teams(&mut session, 2, 2);
    session.flush().await.unwrap();
    let before = session.stats();

    // The captains are flushed: changing one is one UPDATE of that column.
    let (team, members) = &teams[1];
    team.write().captain_id = Some(members[1].read().id);
    let id = team.read().id;
    let loaded = session.get_one::<Team>(id).await.unwrap();
    assert!(Tracked::ptr_eq(&loaded, team), "inserted rows are in the identity map under their generated keys");
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements - before.statements, 1, "one UPDATE; the get was an identity-map hit");
    session.commit().await.unwrap();

    let captain: String = test_db
        .client()
        .await
        .query_one("SELECT c.name FROM team t JOIN player c ON c.id = t.captain_id WHERE t.name = 'team 1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(captain, "team 1 player 1");
}

#[tokio::test]
async fn deleting_both_sides_of_a_cycle_clears_the_nullable_reference_first() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    add_teams(&mut session, 3, 2);
    session.commit().await.unwrap();

    let mut session = db.session();
    let teams = session.query::<Team>().all().await.unwrap();
    let players = session.query::<Player>().all().await.unwrap();
    for player in &players {
        session.delete(player).unwrap();
    }
    for team in &teams {
        session.delete(team).unwrap();
    }
    let before = session.stats();
    let stats = session.commit().await.unwrap();

    assert_eq!(stats.statements - before.statements, 3, "clear the captains, DELETE players, DELETE teams");
    let client = test_db.client().await;
    let left: i64 = client
        .query_one("SELECT (SELECT count(*) FROM team) + (SELECT count(*) FROM player)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_failed_flush_with_a_post_update_leaves_everything_pending() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client.batch_execute("ALTER TABLE player ADD CHECK (name <> 'refused')").await.unwrap();
    let mut session = db.session();
    let teams = add_teams(&mut session, 2, 2);
    // The teams go in the first round trip; this player, in the second, is refused.
    teams[1].1[1].write().name = "refused".into();

    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::CheckViolation { .. }), "{error:?}");
    assert_eq!(session.pending().unwrap().inserts, 6, "nothing was applied");
    assert_eq!(teams[0].0.read().id, 0, "no generated key reached the objects");

    teams[1].1[1].write().name = "team 1 player 1".into();
    session.commit().await.unwrap();
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM team), (SELECT count(captain_id) FROM team), (SELECT count(*) FROM player)",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    assert_eq!(counts, (2, 2, 4), "the retry inserted each row once, captains included");
}

#[tokio::test]
async fn rows_that_reference_nothing_through_the_cycle_need_no_post_update() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    // Players are used too, so the cycle is in play; no team has a captain.
    let team = session.add(Team { id: 0, name: "no captain".into(), captain_id: None });
    let player = session.add(Player { id: 0, name: "no captain player".into(), team_id: 0 });
    session.set_parent(&player, Player::TEAM, &team).unwrap();
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2, "INSERT team, INSERT player, and no UPDATE");
    let captains: i64 =
        test_db.client().await.query_one("SELECT count(captain_id) FROM team", &[]).await.unwrap().get(0);
    assert_eq!(captains, 0);
}

#[tokio::test]
async fn a_row_with_no_column_to_write_is_inserted_with_its_defaults() {
    let (test_db, db) = setup().await;
    for nodes in [1, 3] {
        let mut session = db.session();
        for _ in 0..nodes {
            let node = session.add(Node { id: 0, first_edge_id: None });
            let edge = session.add(Edge { id: 0, node_id: 0 });
            session.set_parent(&edge, Edge::NODE, &node).unwrap();
            session.set_parent(&node, Node::FIRST_EDGE, &edge).unwrap();
        }
        session.commit().await.unwrap();
    }
    let linked: i64 = test_db
        .client()
        .await
        .query_one("SELECT count(*) FROM node n JOIN edge e ON e.id = n.first_edge_id AND e.node_id = n.id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 4, "one node alone (DEFAULT VALUES), then three in one statement");
}

//! Relationships in a session: linking a child to a parent (also one not yet
//! inserted), and loading the parents of many children, or the children of
//! many parents, with one query each, so that walking a relation never
//! costs a query per row.

use std::collections::HashSet;

use tokio_postgres::Row;

use crate::connection::Access;
use crate::error::{Error, Result};
use crate::identity::ParentLink;
use crate::load_together::{prepared, Load, Planned, Prepare};
use crate::poll_budget::map_in_chunks;
use crate::relation::Relation;
use crate::row_chunks::{LoadedRows, RowChunks};
use crate::session::Session;
use crate::sql;
use crate::tracked::Tracked;
use crate::types::{param_refs, Param};
use crate::Entity;

/// Parent keys: those whose children through one foreign key were loaded,
/// or those of one load. With foldhash's randomly seeded hasher, as the
/// session's other maps: every `children` call looks its parent up here.
type KeySet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The keys of `entities` under `key_of`, each once, in first-seen order.
fn distinct_keys<E: Entity, K: Clone + Eq + std::hash::Hash>(
    entities: &[Tracked<E>],
    key_of: impl Fn(&E) -> Option<K>,
) -> Result<Vec<K>> {
    let mut seen = KeySet::with_capacity_and_hasher(entities.len(), foldhash::fast::RandomState::default());
    let mut keys = Vec::with_capacity(entities.len());
    for entity in entities {
        if let Some(key) = key_of(&entity.lock_read()?.current) {
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

impl Session {
    /// Points `child` at `parent` through `relation`.
    ///
    /// If the parent is already in the database, the child's foreign key is
    /// set now (a write like any other). If the parent was added and is not
    /// inserted yet, its key is not known: the flush inserts the parent
    /// first and fills in the child's foreign key from the key the database
    /// generated, before inserting (or updating) the child. 1,000 new
    /// parents with 10 new children each are two INSERT statements. A child
    /// marked for deletion is not written, so such a link fills nothing
    /// into it: it keeps the key it had.
    pub fn set_parent<C: Entity, P: Entity>(
        &mut self,
        child: &Tracked<C>,
        relation: Relation<C, P>,
        parent: &Tracked<P>,
    ) -> Result<()> {
        let parents = self.registries.of::<P>();
        let parent_pending = parents.pending_inserts.contains(parent.address());
        if !parent_pending && !parents.owns(parent) {
            return Err(Error::NotInSession { entity: P::META.name });
        }
        let children = self.registries.of::<C>();
        let child_pending = children.pending_inserts.contains(child.address());
        if !child_pending && !children.owns(child) {
            return Err(Error::NotInSession { entity: C::META.name });
        }
        let column = relation.column_index();
        children.links.swap_remove(&(column, child.address()));
        if !parent_pending {
            let key = parent.lock_read()?.current.key();
            relation.set_parent_key(&mut *child.try_write()?, key);
            return Ok(());
        }
        if !child_pending {
            // A loaded child becomes a write candidate: the flush updates its
            // foreign key once the parent's key is known.
            drop(child.try_write()?);
        }
        let set = relation.setter();
        let waited_for = parent.clone();
        let assigns_key = !P::META.key_columns().any(|k| P::META.columns[k].generated);
        let keyed_by_itself = parent.conflict_rule().is_none_or(|rule| rule.target == P::META.key_set());
        let link = ParentLink {
            child: child.clone(),
            parent: Box::new(parent.clone()),
            parent_address: parent.address(),
            resolve: Box::new(move |registries, child, entity| {
                let Some(parents) = registries.get_ref::<P>() else { return Ok(false) };
                let parent_key = || -> Result<P::Key> {
                    // A row pointing at itself: its entity is `entity`, locked already.
                    if child == waited_for.address() {
                        if let Some(itself) = (entity as &dyn std::any::Any).downcast_ref::<P>() {
                            return Ok(itself.key());
                        }
                    }
                    Ok(waited_for.lock_read()?.current.key())
                };
                let key = match parents.provisional.get(&waited_for.address()) {
                    Some(inserted) => inserted.key(),
                    None if parents.owns(&waited_for) => parent_key()?,
                    // A key the application assigns is known before the
                    // insert; and a parent that takes over the row of a
                    // deleted one with its key (a row switch) is never
                    // inserted, so waiting for its insert would never end.
                    // Unless an upsert on other columns may find the row
                    // under another key: then its statement tells.
                    None if assigns_key
                        && keyed_by_itself
                        && parents.pending_inserts.contains(waited_for.address()) =>
                    {
                        parent_key()?
                    }
                    None => return Ok(false),
                };
                set(entity, key);
                Ok(true)
            }),
        };
        children.links.insert((column, child.address()), link);
        children.children_index.link(column, parent.address(), child);
        Ok(())
    }

    /// The parent `child` points at through `relation`, without SQL:
    /// `Ok(None)` for a NULL reference, the pending parent of a
    /// [`set_parent`](Self::set_parent) link, or the tracked parent.
    /// `Ok(None)` too for a parent a load of parents looked for and did not
    /// find (deleted, soft-deleted, another tenant's), until the session
    /// next writes, which may bring the row back. A parent the session has
    /// not loaded is [`Error::RelationNotLoaded`]: load parents in batches
    /// with [`load_parents`](Self::load_parents).
    pub fn parent<C: Entity, P: Entity>(
        &mut self,
        child: &Tracked<C>,
        relation: Relation<C, P>,
    ) -> Result<Option<Tracked<P>>> {
        let column = relation.column_index();
        let linked = self
            .registries
            .of::<C>()
            .links
            .get(&(column, child.address()))
            .and_then(|link| link.parent.downcast_ref::<Tracked<P>>().cloned());
        if linked.is_some() {
            return Ok(linked);
        }
        let Some(key) = relation.parent_key(&child.lock_read()?.current) else { return Ok(None) };
        match self.registries.of::<P>().identity.get(&key).cloned() {
            // Loaded, and since soft-deleted (or another tenant's): no parent.
            Some(parent) if self.filters.hides_tracked(&parent)? => Ok(None),
            Some(parent) => Ok(Some(parent)),
            None if self.known_absent::<P>(&key) => Ok(None),
            None => Err(Error::RelationNotLoaded { entity: C::META.name, relation: relation.name() }),
        }
    }

    /// Loads the parents of `children` through `relation` with one query for
    /// those not in the identity map yet (none if all are), and returns them.
    /// Afterwards [`parent`](Self::parent) reads each child's parent without SQL.
    /// If some of `children` are linked to parents not inserted yet
    /// ([`set_parent`](Self::set_parent)), it autoflushes first, so that
    /// those parents have their keys.
    pub async fn load_parents<C: Entity, P: Entity>(
        &mut self,
        children: &[Tracked<C>],
        relation: Relation<C, P>,
    ) -> Result<Vec<Tracked<P>>> {
        let column = relation.column_index();
        let links = &self.registries.of::<C>().links;
        if children.iter().any(|child| links.contains_key(&(column, child.address()))) {
            // Children linked to parents not inserted yet hold placeholder
            // keys until a flush inserts the parents and fills them in.
            self.autoflush_for_query().await?;
        }
        let keys = distinct_keys(children, |child| relation.parent_key(child))?;
        let parents = self.get_many::<P>(&keys).await?;
        self.note_absent(&keys, &parents);
        Ok(parents)
    }

    /// Records which of `keys`, the parents a load looked for, it found
    /// neither in the database nor in the identity map (`found` holds
    /// those it returned), so that [`parent`](Self::parent) answers "no
    /// parent" for them until the session next writes.
    fn note_absent<P: Entity>(&mut self, keys: &[P::Key], found: &[Tracked<P>]) {
        let writes = self.connection.writes();
        let registry = self.registries.of::<P>();
        if registry.absent_at != writes {
            registry.absent.clear();
            registry.absent_at = writes;
        }
        if found.len() == keys.len() && registry.absent.is_empty() {
            return;
        }
        let found: HashSet<P::Key> = found.iter().map(Tracked::key).collect();
        // Committed by another transaction since an earlier load noted it.
        registry.absent.retain(|key| !found.contains(key));
        let missing = keys.iter().filter(|key| !found.contains(key) && registry.identity.get(key).is_none());
        registry.absent.extend(missing.cloned());
    }

    /// Whether a load of parents found `key` missing since the session
    /// last wrote (see [`note_absent`](Self::note_absent)).
    fn known_absent<P: Entity>(&mut self, key: &P::Key) -> bool {
        let writes = self.connection.writes();
        let registry = self.registries.of::<P>();
        registry.absent_at == writes && registry.absent.contains(key)
    }

    /// Loads the children of `parents` through `relation` with one query
    /// (`WHERE fk = ANY($1)`, whatever the number of parents; for a foreign
    /// key of several columns `WHERE (a, b) IN (SELECT ... FROM UNNEST($1,
    /// $2))`, one array per key column), identity-mapped,
    /// and returns them. Afterwards [`children`](Self::children) lists each
    /// parent's children without SQL.
    pub async fn load_children<C: Entity, P: Entity>(
        &mut self,
        parents: &[Tracked<P>],
        relation: Relation<C, P>,
    ) -> Result<Vec<Tracked<C>>> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let (rows, keys) = self.read_children(parents, relation).await?;
        self.expect_children::<C>(rows.len(), keys.len());
        let children = self.registries.of::<C>().track_all(rows).await;
        self.children_loaded(relation, keys);
        Ok(children)
    }

    /// [`load_children`](Self::load_children) for a caller that reads the
    /// children through [`children`](Self::children) only (the last level
    /// of an eager load): no handle per child is collected.
    pub(crate) async fn load_children_unkept<C: Entity, P: Entity>(
        &mut self,
        parents: &[Tracked<P>],
        relation: Relation<C, P>,
    ) -> Result<()> {
        if parents.is_empty() {
            return Ok(());
        }
        let (rows, keys) = self.read_children(parents, relation).await?;
        self.expect_children::<C>(rows.len(), keys.len());
        self.registries.of::<C>().track_all_unkept(rows).await;
        self.children_loaded(relation, keys);
        Ok(())
    }

    /// Reads the children of `parents` (not empty) through `relation`,
    /// untracked, with the parents' distinct keys.
    async fn read_children<C: Entity, P: Entity>(
        &mut self,
        parents: &[Tracked<P>],
        relation: Relation<C, P>,
    ) -> Result<(RowChunks<C>, Vec<P::Key>)> {
        // Before reading the keys: a parent not inserted yet gets its
        // generated key from this flush.
        self.autoflush_for_query().await?;
        let keys = distinct_keys(parents, |parent| Some(parent.key()))?;
        let (sql, params) = self.children_statement(relation, &keys);
        let rows = self.load_untracked_with(&sql, &param_refs(&params), Access::Read).await?;
        Ok((rows, keys))
    }

    /// The statement (and its parameters) that loads the children through
    /// `relation` of the parents with `keys`, with the session's filters of
    /// `C`. Also builds the index [`children`](Self::children) reads, over
    /// what the session tracks already, so that the load files each child
    /// in it as it tracks the row. If it cannot be built now (an entity
    /// borrowed), the first lookup builds it, and reports why it cannot.
    fn children_statement<C: Entity, P: Entity>(
        &mut self,
        relation: Relation<C, P>,
        keys: &[P::Key],
    ) -> (String, Vec<Param>) {
        if self.registries.of::<C>().refresh_children_index().is_err() {
            tracing::debug!(entity = C::META.name, "children index left for the first lookup to build");
        }
        let mut sql = if let composite @ [_, _, ..] = relation.column().foreign_key_columns {
            sql::select_children_by_keys(C::META, composite, P::META)
        } else {
            let mut sql = String::from(sql::select_from_of::<C>());
            sql.push_str(" WHERE ");
            sql::push_column(&mut sql, "t", relation.column().name);
            sql.push_str(" = ANY($1)");
            sql
        };
        let mut params = P::key_arrays(keys);
        self.filters.and_where::<C>(&mut sql, &mut params);
        (sql, params)
    }

    /// Sizes each bucket of the children index for `children` children
    /// of `parents` parents about to be tracked.
    fn expect_children<C: Entity>(&mut self, children: usize, parents: usize) {
        let per_parent = children.div_ceil(parents.max(1));
        self.registries.of::<C>().children_index.expect_per_parent(parents, per_parent);
    }

    /// Records that the children through `relation` of the parents with
    /// `keys` are loaded.
    fn children_loaded<C: Entity, P: Entity>(&mut self, relation: Relation<C, P>, keys: Vec<P::Key>) {
        let loaded = self
            .registries
            .of::<C>()
            .loaded_children
            .entry(relation.column_index())
            .or_insert_with(|| Box::new(KeySet::<P::Key>::default()));
        if let Some(loaded) = loaded.downcast_mut::<KeySet<P::Key>>() {
            loaded.extend(keys);
        }
    }

    /// The children of `parent` through `relation`, without SQL, as the
    /// session sees them now: loaded children that still point at it, and
    /// children added or linked to it since (pending ones included), minus
    /// those pending deletion. A collection the session has not loaded is
    /// [`Error::RelationNotLoaded`]: load it for many parents at once with
    /// [`load_children`](Self::load_children).
    pub fn children<C: Entity, P: Entity>(
        &mut self,
        parent: &Tracked<P>,
        relation: Relation<C, P>,
    ) -> Result<Vec<Tracked<C>>> {
        let key = parent.lock_read()?.current.key();
        let registry = self.registries.of::<C>();
        let loaded = registry
            .loaded_children
            .get(&relation.column_index())
            .and_then(|loaded| loaded.downcast_ref::<KeySet<P::Key>>())
            .is_some_and(|loaded| loaded.contains(&key));
        if !loaded {
            return Err(Error::RelationNotLoaded { entity: P::META.name, relation: relation.name() });
        }
        // A link to a pending parent wins over the foreign key, which keeps
        // its old value (or a placeholder) until the flush fills it in.
        let hash = crate::children_index::key_hash(&key);
        let children =
            registry.children_of(relation.column_index(), Some(hash), parent.address(), |link, child| match link {
                Some(link) => link.parent.downcast_ref::<Tracked<P>>().is_some_and(|p| Tracked::ptr_eq(p, parent)),
                None => relation.parent_key(child).as_ref() == Some(&key),
            })?;
        if !self.filters.may_hide::<C>() {
            return Ok(children);
        }
        // Children soft-deleted since they were loaded are gone from view.
        let mut visible = Vec::with_capacity(children.len());
        for child in children {
            if !self.filters.hides_tracked(&child)? {
                visible.push(child);
            }
        }
        Ok(visible)
    }
}

/// Relation loads to run with others in one round trip
/// ([`Session::load_together`]).
impl<E: Entity> Load<Vec<Tracked<E>>> {
    /// [`Session::get_many`] as a [`Load`]: the entities with these keys,
    /// in order, those not in the identity map read with one statement
    /// (none if all are).
    pub fn get_many(keys: &[E::Key]) -> Self {
        let keys = keys.to_vec();
        Load::new(move |session| plan_get_many(session, keys, false))
    }

    /// [`Session::load_parents`] as a [`Load`]: the parents of `children`
    /// through `relation`, those not in the identity map read with one
    /// statement (none if all are).
    pub fn parents<C: Entity>(children: &[Tracked<C>], relation: Relation<C, E>) -> Self {
        let children = children.to_vec();
        Load::new(move |session| {
            let keys = distinct_keys(&children, |child| relation.parent_key(child))?;
            plan_get_many(session, keys, true)
        })
    }

    /// [`Session::load_children`] as a [`Load`]: the children of `parents`
    /// through `relation`, with one statement; afterwards
    /// [`Session::children`] lists each parent's children without SQL.
    pub fn children<P: Entity>(parents: &[Tracked<P>], relation: Relation<E, P>) -> Self {
        let parents = parents.to_vec();
        Load::new(move |session| {
            if parents.is_empty() {
                return Ok(Planned::ready(Vec::new()));
            }
            let keys = distinct_keys(&parents, |parent| Some(parent.key()))?;
            let (sql, params) = session.children_statement(relation, &keys);
            let parents = keys.len();
            let prepare: Prepare = Box::new(move |session, rows| {
                Box::pin(async move {
                    let children = decode::<E>(&rows).await?;
                    session.expect_children::<E>(children.len(), parents);
                    Ok(prepared(session.registries.of::<E>().track_all(children).await))
                })
            });
            // The collections are loaded once every child is tracked.
            Planned::statement_yielding(session, sql, params, Access::Read, prepare, move |session, children| {
                session.children_loaded(relation, keys);
                Ok(children)
            })
        })
    }
}

/// The plan of [`Load::get_many`]: a statement for the keys the session
/// does not track, and the tracked instances of all `keys` after it; for
/// a load of `parents`, the keys it did not find are noted as absent (see
/// [`Session::parent`]).
fn plan_get_many<E: Entity>(
    session: &mut Session,
    keys: Vec<E::Key>,
    parents: bool,
) -> Result<Planned<Vec<Tracked<E>>>> {
    let missing = session.untracked_keys::<E>(&keys);
    if missing.is_empty() {
        return Ok(Planned::ready(session.visible_tracked_of::<E>(&keys)?));
    }
    let mut params = E::key_arrays(&missing);
    let sql = session.filtered::<E>(sql::select_by_keys_of::<E>(), &mut params).into_owned();
    let prepare: Prepare = Box::new(|session, rows| {
        Box::pin(async move {
            let found = decode::<E>(&rows).await?;
            session.registries.of::<E>().track_all_unkept(found).await;
            Ok(prepared(()))
        })
    });
    Planned::statement_yielding(session, sql, params, Access::Read, prepare, move |session, ()| {
        let found = session.visible_tracked_of::<E>(&keys)?;
        if parents {
            session.note_absent(&keys, &found);
        }
        Ok(found)
    })
}

/// Decodes rows of `E`'s columns, [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD)
/// at a time with a yield to the runtime in between.
pub(crate) async fn decode<E: Entity>(rows: &[Row]) -> Result<Vec<E>> {
    map_in_chunks(rows, |row| E::from_row(row, 0)).await
}

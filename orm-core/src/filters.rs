//! Global filters: conditions the session adds to every load of an entity
//! that declares them, so that no query can forget them.
//!
//! - Soft delete (`#[orm(soft_delete)]` on an `Option` timestamp): loads
//!   keep rows whose marker is NULL, and the session's delete sets the
//!   marker instead of deleting the row.
//! - Tenant (`#[orm(tenant)]`): a session opened for a tenant
//!   ([`Database::session_for_tenant`](crate::Database::session_for_tenant))
//!   loads only that tenant's rows, fills the tenant of the entities it
//!   inserts, and refuses to write another tenant's.
//!
//! The filters are plain [`Condition`]s on the entity, with the tenant a
//! bind parameter, so a filtered statement's text depends on the entity
//! and on which filters apply, never on the tenant's value. One query lifts
//! them with [`Query::include_deleted`](crate::Query::include_deleted) or
//! [`Query::all_tenants`](crate::Query::all_tenants).

use std::any::Any;
use std::sync::Arc;

use tokio_postgres::types::ToSql;

use crate::column::Condition;
use crate::entity::{Entity, EntityMeta};
use crate::error::{Error, Result};
use crate::expr::{ExprNode, SharedParam};
use crate::identity::Registry;
use crate::tracked::Tracked;
use crate::types::Param;

/// The tenant a session is scoped to: its value, for comparing with and
/// filling in tenant fields, and the same value as a bind parameter.
#[derive(Clone)]
pub(crate) struct Tenant {
    value: Arc<dyn Any + Send + Sync>,
    param: SharedParam,
}

impl Tenant {
    pub(crate) fn new<T: ToSql + Clone + Send + Sync + 'static>(value: T) -> Self {
        Tenant { param: SharedParam::new(value.clone()), value: Arc::new(value) }
    }

    /// Whether `entity` belongs to this tenant: [`Error::WrongTenant`] if
    /// not, [`Error::TenantType`] if the tenant is not of the type of the
    /// entity's tenant column. Entities without one belong to every tenant.
    pub(crate) fn check<E: Entity>(&self, entity: &E) -> Result<()> {
        let Some(column) = E::META.tenant_column() else { return Ok(()) };
        match entity.tenant_is(&*self.value) {
            Some(true) => Ok(()),
            Some(false) => Err(Error::WrongTenant { entity: E::META.name }),
            None => Err(Error::TenantType { entity: E::META.name, column: E::META.columns[column].name }),
        }
    }
}

/// The global filters one statement lifts, set by the query's
/// `include_deleted` and `all_tenants`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Lift {
    /// Soft-deleted rows are loaded too.
    pub(crate) deleted: bool,
    /// Rows of every tenant are loaded.
    pub(crate) tenants: bool,
}

/// A session's global filters: the soft-delete markers of the entities
/// that have one, always, and the tenant it was opened for, if any.
#[derive(Clone, Default)]
pub(crate) struct Filters {
    tenant: Option<Tenant>,
}

impl Filters {
    /// The filters of a session opened for `tenant`.
    pub(crate) fn for_tenant(tenant: Tenant) -> Self {
        Filters { tenant: Some(tenant) }
    }

    /// The tenant the session was opened for.
    pub(crate) fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// The condition every load of `E` adds, less what `lift` lifts;
    /// `None` when nothing applies (an entity without filters: its
    /// statements stay as they were).
    pub(crate) fn condition<E: Entity>(&self, lift: Lift) -> Option<Condition<E>> {
        self.condition_of(E::META, lift).map(Condition::retype)
    }

    /// [`condition`](Self::condition) of the entity `meta` describes.
    pub(crate) fn condition_of(&self, meta: &'static EntityMeta, lift: Lift) -> Option<Condition<()>> {
        let live = meta
            .soft_delete_column()
            .filter(|_| !lift.deleted)
            .map(|column| Condition::null_expr(ExprNode::Column(meta.columns[column].name), false));
        let tenant =
            meta.tenant_column().filter(|_| !lift.tenants).zip(self.tenant.as_ref()).map(|(column, tenant)| {
                Condition::compare_expr(
                    ExprNode::Column(meta.columns[column].name),
                    "=",
                    ExprNode::Value(tenant.param.clone()),
                )
            });
        match (live, tenant) {
            (Some(live), Some(tenant)) => Some(live.and(tenant)),
            (live, tenant) => live.or(tenant),
        }
    }

    /// Appends ` AND <condition>` of `E` (see [`condition`](Self::condition))
    /// to a statement that has a `WHERE` clause and calls `E`'s table `t`,
    /// its values numbered after `params`.
    pub(crate) fn and_where<E: Entity>(&self, sql: &mut String, params: &mut Vec<Param>) {
        if let Some(condition) = self.condition::<E>(Lift::default()) {
            sql.push_str(" AND ");
            condition.render(sql, params);
        }
    }

    /// Whether the session's view hides `entity`, as its loads would hide
    /// its row: soft-deleted, or another tenant's. For instances already
    /// tracked, which `get` and `children` return without SQL.
    pub(crate) fn hides<E: Entity>(&self, entity: &E) -> bool {
        let deleted = E::META.soft_delete_column().is_some_and(|column| !entity.column_is_null(column));
        deleted || self.tenant.as_ref().is_some_and(|tenant| tenant.check(entity).is_err())
    }

    /// Whether some filter of the session applies to `E`: a soft-delete
    /// column, or a tenant column with a tenant set. Asked once for many
    /// entities, instead of searching `E`'s columns for each.
    pub(crate) fn may_hide<E: Entity>(&self) -> bool {
        let soft_deleted = const { E::META.soft_delete_column().is_some() };
        let has_tenant = const { E::META.tenant_column().is_some() };
        soft_deleted || (has_tenant && self.tenant.is_some())
    }

    /// [`hides`](Self::hides) of a tracked instance, as it is now; without
    /// borrowing it when no filter applies to `E`.
    pub(crate) fn hides_tracked<E: Entity>(&self, tracked: &Tracked<E>) -> Result<bool> {
        if !self.may_hide::<E>() {
            return Ok(false);
        }
        let hidden = self.hides(&tracked.lock_read()?.current);
        Ok(hidden)
    }

    /// Gives a new entity the session's tenant if it has none yet (its
    /// tenant field holds the type's default). One of another tenant is
    /// left as it is, for the flush to refuse.
    pub(crate) fn fill_tenant<E: Entity>(&self, entity: &mut E) {
        if let Some(tenant) = &self.tenant {
            entity.fill_tenant(&*tenant.value);
        }
    }

    /// [`fill_tenant`](Self::fill_tenant), then refuses a row of another
    /// tenant ([`Error::WrongTenant`]): for rows a statement writes at once,
    /// with no flush to check them.
    pub(crate) fn claim_new<E: Entity>(&self, entity: &mut E) -> Result<()> {
        let Some(tenant) = &self.tenant else { return Ok(()) };
        entity.fill_tenant(&*tenant.value);
        tenant.check(entity)
    }

    /// Refuses a flush that would write a row of another tenant: a pending
    /// insert, a changed entity (as changed, and as loaded) or a deletion.
    /// Checked before any statement is sent, so nothing is written.
    pub(crate) fn check_writes<T: Entity>(&self, registry: &Registry<T>) -> Result<()> {
        let Some(tenant) = &self.tenant else { return Ok(()) };
        if T::META.tenant_column().is_none() {
            return Ok(());
        }
        for tracked in registry.pending_inserts.values().chain(registry.pending_deletes.values()) {
            tenant.check(&tracked.lock_read()?.current)?;
        }
        for tracked in registry.written() {
            let state = tracked.lock_read()?;
            tenant.check(&state.current)?;
            tracked.snapshot(&state, |snapshot| tenant.check(snapshot)).transpose()?;
        }
        Ok(())
    }
}

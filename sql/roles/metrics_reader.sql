-- The read-only BI role `metrics_reader` (applied by the migrate step after every table exists).
-- It may read entity.* only: nothing on sources, staging, state or ops, and every transaction it
-- opens is read-only. Its search_path and time zone are set on the role, so the guide's
-- unqualified queries and CURRENT_DATE work whatever the warehouse's own settings (a warehouse at
-- UTC+14 would otherwise see tomorrow's CURRENT_DATE). It is created with LOGIN and no password:
-- a DBA sets one (`alter role metrics_reader password '...'`) for Superset. Without CREATEROLE
-- the step logs a notice and the layer carries on; docs/operations.md has the details.
-- A role is cluster-wide while the layer's locks are per database: the role is created and
-- altered only when it is missing or its settings differ, so databases of one cluster migrating
-- at the same time do not update the same catalog row.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'metrics_reader') then
        begin
            create role metrics_reader login;
        exception when duplicate_object or unique_violation then
            null;  -- created meanwhile by a migration in another database
        end;
    end if;
    if not exists (
        select 1
        from pg_catalog.pg_db_role_setting as s
        inner join pg_catalog.pg_roles as r on s.setrole = r.oid
        where
            r.rolname = 'metrics_reader' and s.setdatabase = 0
            and s.setconfig @> array[
                'search_path="$user", public, entity', 'TimeZone=UTC',
                'default_transaction_read_only=on'
            ]
    ) then
        alter role metrics_reader set search_path = "$user", public, entity;
        alter role metrics_reader set timezone = 'UTC';
        alter role metrics_reader set default_transaction_read_only = on;
    end if;
    grant usage on schema entity to metrics_reader;
    grant select on all tables in schema entity to metrics_reader;
    alter default privileges in schema entity grant select on tables to metrics_reader;
exception when insufficient_privilege then
    raise notice 'metrics_layer: no privilege to manage role metrics_reader (%); see docs', sqlerrm;
end
$$;

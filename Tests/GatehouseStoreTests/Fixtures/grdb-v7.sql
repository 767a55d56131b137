-- A state database as the GRDB-based GatehouseStore (GRDB 7.10.0) left it: `sqlite3 grdb-v7.db .dump`.
-- Migrated by GRDB's DatabaseMigrator up to v7-command-ids, with outbox rows in v7's format (IoT Hub
-- property bags). GRDBCompatibilityTests migrates it with the SQLiteDB-based store.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
INSERT INTO grdb_migrations VALUES('v1-registry-outbox-status');
INSERT INTO grdb_migrations VALUES('v2-audit');
INSERT INTO grdb_migrations VALUES('v3-provisioning');
INSERT INTO grdb_migrations VALUES('v4-device-tags');
INSERT INTO grdb_migrations VALUES('v5-gateway-identity');
INSERT INTO grdb_migrations VALUES('v6-site-credentials');
INSERT INTO grdb_migrations VALUES('v7-command-ids');
CREATE TABLE device (
    id TEXT PRIMARY KEY NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    messages_in INTEGER NOT NULL DEFAULT 0,
    messages_out INTEGER NOT NULL DEFAULT 0,
    link_state TEXT NOT NULL DEFAULT 'down',
    link_reason TEXT NOT NULL DEFAULT '',
    link_changed_ms INTEGER NOT NULL DEFAULT 0
, provisioning TEXT NOT NULL DEFAULT '', assigned_hub TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '{}', site_credential_ms INTEGER NOT NULL DEFAULT 0, removed_ms INTEGER);
INSERT INTO device VALUES('d',1,2,2,0,'down','',0,'','','','{}',0,NULL);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    size INTEGER NOT NULL
);
INSERT INTO outbox VALUES(1,'d','$.ct=application%2Fjson&k=v%26w&bare&empty=',X'00ff',1,1,40);
INSERT INTO outbox VALUES(2,'d','',X'',2,2,1);
CREATE TABLE daemon_status (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    stopped_ms INTEGER,
    outbox_messages INTEGER NOT NULL DEFAULT 0,
    outbox_bytes INTEGER NOT NULL DEFAULT 0,
    ingested_total INTEGER NOT NULL DEFAULT 0,
    delivered_total INTEGER NOT NULL DEFAULT 0,
    dropped_total INTEGER NOT NULL DEFAULT 0,
    commands_refused_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    command_kind TEXT NOT NULL,
    command_name TEXT NOT NULL,
    caller TEXT NOT NULL,
    tenant TEXT NOT NULL,
    effect TEXT NOT NULL,
    rules TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE gateway_identity (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  registration_id TEXT NOT NULL,
  id_scope TEXT NOT NULL,
  device_id TEXT NOT NULL,
  assigned_hub TEXT NOT NULL,
  attestation TEXT NOT NULL,
  registered_ms INTEGER NOT NULL
);
CREATE TABLE command_id (
    caller TEXT NOT NULL,
    device_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (caller, device_id, command_id)
) WITHOUT ROWID;
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('outbox',2);
CREATE INDEX audit_time ON audit (time_ms);
CREATE INDEX audit_device ON audit (device_id, time_ms);
CREATE INDEX command_id_expiry ON command_id (expires_ms);
COMMIT;

-- enforce: what the application connects as. LOGIN, never BYPASSRLS: every row it
-- touches goes through the tables' row-level security policies.
-- {{role}} is replaced by dbkit with the validated name from DBKIT_ROLE_ENFORCE.
DO $dbkit$
DECLARE
  -- The declared attributes: `dbkit roles check` compares the server with this literal and
  -- `dbkit roles apply` enforces it; keep it one quoted literal of [NO]<ATTRIBUTE> keywords.
  attrs constant text := 'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT';
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{{role}}') THEN
    EXECUTE format('CREATE ROLE %I WITH %s', '{{role}}', attrs);
  ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = '{{role}}'
                AND (NOT rolcanlogin OR rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication
                     OR rolbypassrls OR NOT rolinherit)) THEN
    EXECUTE format('ALTER ROLE %I WITH %s', '{{role}}', attrs);
  END IF;
END
$dbkit$;

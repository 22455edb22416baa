-- owner: owns every table; migrations run as it (SET ROLE). It cannot log in.
-- Idempotent: creates the role when missing and corrects drifted attributes.
-- {{role}} is replaced by dbkit with the validated name from DBKIT_ROLE_OWNER.
DO $dbkit$
DECLARE
  -- The declared attributes: `dbkit roles check` compares the server with this literal and
  -- `dbkit roles apply` enforces it; keep it one quoted literal of [NO]<ATTRIBUTE> keywords.
  attrs constant text := 'NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT';
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{{role}}') THEN
    EXECUTE format('CREATE ROLE %I WITH %s', '{{role}}', attrs);
  ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = '{{role}}'
                AND (rolcanlogin OR rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication
                     OR rolbypassrls OR NOT rolinherit)) THEN
    EXECUTE format('ALTER ROLE %I WITH %s', '{{role}}', attrs);
  END IF;
  -- The migrating (session) role must be able to SET ROLE to the owner.
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user)
     AND NOT pg_has_role(session_user, '{{role}}', 'MEMBER') THEN
    EXECUTE format('GRANT %I TO %I', '{{role}}', session_user);
  END IF;
  -- The owner creates the application schema in this database.
  IF NOT has_database_privilege('{{role}}', current_database(), 'CREATE') THEN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), '{{role}}');
  END IF;
END
$dbkit$;

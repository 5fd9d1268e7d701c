-- A reference whose sensors are no longer registered (the machine's sensor set changed) is
-- retired: no longer active, with the start of the first cycle that found the change. A new
-- reference is then built from the completed cycles that started from then on.
ALTER TABLE live_references ADD COLUMN IF NOT EXISTS retired_at timestamptz;

-- Cached volumes whose recovery point was more than 24 hours old when last scanned, or that
-- had no readable recovery point: one row per volume, from its latest scan, oldest first.
-- (recovery_point_age_seconds is scanned_at minus recovery_point_time, fixed at scan time.)
SELECT account_id, account_name, region, gateway_name, volume_arn, recovery_point_time,
       round(recovery_point_age_seconds / 3600.0, 1) AS age_hours, scanned_at, run_id
FROM (
  SELECT rp.*,
         row_number() OVER (PARTITION BY volume_arn ORDER BY scanned_at DESC) AS latest
  FROM fleetscan_recovery_points rp
) ranked
WHERE latest = 1
  AND (recovery_point_age_seconds IS NULL OR recovery_point_age_seconds > 24 * 3600)
ORDER BY recovery_point_age_seconds DESC NULLS FIRST, volume_arn;

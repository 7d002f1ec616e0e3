-- The latest recovery point of every cached volume, across every run in the table: one row per
-- volume, from the scan that saw the newest recovery point (the latest scan among equals).
-- Times are UTC RFC 3339 strings with milliseconds, so they sort as text; from_iso8601_timestamp()
-- turns one into a timestamp. To read fewer partitions, add e.g. WHERE dt >= '2026-11-01' inside.
SELECT account_id, account_name, region, gateway_name, volume_arn,
       recovery_point_time, recovery_point_age_seconds, scanned_at, run_id
FROM (
  SELECT rp.*,
         row_number() OVER (
           PARTITION BY volume_arn
           ORDER BY recovery_point_time DESC NULLS LAST, scanned_at DESC
         ) AS newest
  FROM fleetscan_recovery_points rp
) ranked
WHERE newest = 1
ORDER BY account_id, region, volume_arn;

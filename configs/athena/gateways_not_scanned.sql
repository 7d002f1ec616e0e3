-- Gateways that could not be scanned in their latest scan (status 'error': offline, not found,
-- access denied...), with why, from the errors dataset of the same run.
SELECT g.account_id, g.account_name, g.region, g.gateway_arn, g.gateway_name, g.gateway_type,
       g.error_code, e.error_code AS aws_error_code, e.message, e.attempts, g.scanned_at, g.run_id
FROM (
  SELECT gw.*,
         row_number() OVER (PARTITION BY gateway_arn ORDER BY scanned_at DESC) AS latest
  FROM fleetscan_gateways gw
) g
LEFT JOIN fleetscan_errors e
  ON e.dt = g.dt
 AND e.run_id = g.run_id
 AND e.gateway_arn = g.gateway_arn
 AND e.operation = 'ListVolumeRecoveryPoints'
WHERE g.latest = 1
  AND g.status = 'error'
ORDER BY g.account_id, g.region, g.gateway_arn;

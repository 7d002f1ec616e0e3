-- fleetscan error (record schema v2)
-- fleetscan schema --format athena --dataset errors --location s3://amzn-s3-demo-bucket/fleetscan/
CREATE EXTERNAL TABLE IF NOT EXISTS fleetscan_errors (
  `schema_version`     bigint  COMMENT 'Version of this record schema',
  `run_id`             string  COMMENT 'The scan that produced the record; its manifest is manifests/dt=YYYY-MM-DD/<run_id>.json',
  `at`                 string  COMMENT 'When the failure was final (after the last attempt), UTC RFC 3339',
  `account_id`         string  COMMENT 'Account the failed call was made for; null when the failure concerns no single account (listing the organization)',
  `region`             string  COMMENT 'Region the failed call was made in; null for global calls (STS, Organizations)',
  `gateway_arn`        string  COMMENT 'Gateway the failed call was about; null for calls not about one gateway',
  `operation`          string  COMMENT 'The API operation that failed (AssumeRole, ListAccounts, DescribeRegions, ListGateways, ListVolumeRecoveryPoints, ...)',
  `error_code`         string  COMMENT 'The AWS error code (for example AccessDenied, InvalidGatewayRequestException, ThrottlingException), or fleetscan\'s name for a failure without one (Timeout, ConnectionError, MalformedResponse, ResponseTooLarge, CredentialsError)',
  `gateway_error_code` string  COMMENT 'Storage Gateway\'s own error.errorCode (GatewayNotConnected, GatewayNotFound, NotSupported, ...); null when the answer carried none',
  `message`            string  COMMENT 'The error message, for people; never contains credentials',
  `attempts`           bigint  COMMENT 'How many times the call was sent, the first try included',
  `retryable`          boolean COMMENT 'Whether the error is of a kind fleetscan retries (it was retried until the attempts or the retry budget ran out); false for errors a retry cannot fix',
  `organization_id`    string  COMMENT 'The id (o-xxxxxxxxxx) of the organization the failure concerns, when known; null for an account of a static account list, or an organization that could not be reached (the message names it)'
)
COMMENT 'fleetscan error (record schema v2)'
PARTITIONED BY (`dt` string COMMENT 'UTC start date of the run (yyyy-MM-dd): one run, one partition')
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://amzn-s3-demo-bucket/fleetscan/errors/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2025-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://amzn-s3-demo-bucket/fleetscan/errors/dt=${dt}/'
);

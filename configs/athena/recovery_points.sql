-- fleetscan recovery point (record schema v2)
-- fleetscan schema --format athena --dataset recovery_points --location s3://amzn-s3-demo-bucket/fleetscan/
CREATE EXTERNAL TABLE IF NOT EXISTS fleetscan_recovery_points (
  `schema_version`             bigint  COMMENT 'Version of this record schema',
  `run_id`                     string  COMMENT 'The scan that produced the record; its manifest is manifests/dt=YYYY-MM-DD/<run_id>.json',
  `scanned_at`                 string  COMMENT 'When fleetscan received the API answer this record comes from (UTC, RFC 3339, milliseconds)',
  `partition`                  string  COMMENT 'AWS partition of the account (aws, aws-cn, aws-us-gov)',
  `account_id`                 string  COMMENT '12-digit AWS account id that owns the gateway',
  `account_name`               string  COMMENT 'Account name from AWS Organizations; null when the account was not listed through Organizations (--accounts, --no-assume-role)',
  `region`                     string  COMMENT 'AWS Region of the gateway',
  `gateway_arn`                string  COMMENT 'ARN of the cached gateway the volume belongs to',
  `gateway_id`                 string  COMMENT 'The gateway\'s id (GatewayId), the last part of its ARN',
  `gateway_name`               string  COMMENT 'The gateway\'s name (GatewayName); null when the API did not return one',
  `volume_arn`                 string  COMMENT 'ARN of the cached volume (VolumeARN), as Storage Gateway spells it',
  `volume_id`                  string  COMMENT 'The volume\'s id, the last part of its ARN',
  `recovery_point_time`        string  COMMENT 'Time of the volume\'s most recent recovery point (VolumeRecoveryPointTime), normalised to UTC RFC 3339 with milliseconds; null when the API sent no readable time',
  `volume_size_bytes`          bigint  COMMENT 'Size of the volume in bytes (VolumeSizeInBytes; read as a number even when the API sends it as a string); null when absent or unreadable',
  `volume_usage_bytes`         bigint  COMMENT 'Bytes of the volume in use (VolumeUsageInBytes); null when the API omits it, as it does for volumes created before May 2015',
  `recovery_point_age_seconds` double  COMMENT 'scanned_at minus recovery_point_time, in seconds: how old the newest recovery point was when scanned',
  `organization_id`            string  COMMENT 'The id (o-xxxxxxxxxx) of the account\'s organization, from Organizations; null for an account of a static account list'
)
COMMENT 'fleetscan recovery point (record schema v2)'
PARTITIONED BY (`dt` string COMMENT 'UTC start date of the run (yyyy-MM-dd): one run, one partition')
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://amzn-s3-demo-bucket/fleetscan/recovery_points/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2025-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://amzn-s3-demo-bucket/fleetscan/recovery_points/dt=${dt}/'
);

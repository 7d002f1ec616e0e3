-- fleetscan gateway (record schema v2)
-- fleetscan schema --format athena --dataset gateways --location s3://amzn-s3-demo-bucket/fleetscan/
CREATE EXTERNAL TABLE IF NOT EXISTS fleetscan_gateways (
  `schema_version`            bigint  COMMENT 'Version of this record schema',
  `run_id`                    string  COMMENT 'The scan that produced the record; its manifest is manifests/dt=YYYY-MM-DD/<run_id>.json',
  `scanned_at`                string  COMMENT 'When fleetscan received the API answer this record comes from (UTC, RFC 3339, milliseconds)',
  `partition`                 string  COMMENT 'AWS partition of the account (aws, aws-cn, aws-us-gov)',
  `account_id`                string  COMMENT '12-digit AWS account id that owns the gateway',
  `account_name`              string  COMMENT 'Account name from AWS Organizations; null when the account was not listed through Organizations (--accounts, --no-assume-role)',
  `region`                    string  COMMENT 'AWS Region of the gateway',
  `gateway_arn`               string  COMMENT 'The gateway\'s ARN, spelled as Storage Gateway returns it (ListGateways)',
  `gateway_id`                string  COMMENT 'The gateway\'s id (GatewayId), the last part of its ARN',
  `gateway_name`              string  COMMENT 'The gateway\'s name (GatewayName); null when the API did not return one',
  `gateway_type`              string  COMMENT 'GatewayType from ListGateways: CACHED, STORED, VTL, FILE_S3, FILE_FSX_SMB, or a newer type (kept as sent)',
  `gateway_operational_state` string  COMMENT 'GatewayOperationalState from ListGateways (ACTIVE or DISABLED)',
  `host_environment`          string  COMMENT 'HostEnvironment from ListGateways (VMWARE, HYPER-V, EC2, KVM, OTHER, SNOWBALL)',
  `status`                    string  COMMENT 'scanned: ListVolumeRecoveryPoints answered',
  `recovery_point_count`      bigint  COMMENT 'Number of recovery points (one per cached volume) the gateway returned; null unless status is scanned',
  `error_code`                string  COMMENT 'Why ListVolumeRecoveryPoints failed for good: Storage Gateway\'s own error.errorCode when the answer carried one (GatewayNotConnected, GatewayNotFound, NotSupported), else the AWS error code (AccessDeniedException, InternalServerError, ...)',
  `organization_id`           string  COMMENT 'The id (o-xxxxxxxxxx) of the account\'s organization, from Organizations; null for an account of a static account list'
)
COMMENT 'fleetscan gateway (record schema v2)'
PARTITIONED BY (`dt` string COMMENT 'UTC start date of the run (yyyy-MM-dd): one run, one partition')
ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'
STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'
OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'
LOCATION 's3://amzn-s3-demo-bucket/fleetscan/gateways/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2025-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://amzn-s3-demo-bucket/fleetscan/gateways/dt=${dt}/'
);

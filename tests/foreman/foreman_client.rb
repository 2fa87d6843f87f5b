#!/usr/bin/env ruby
# frozen_string_literal: true

# A smart-proxy client that behaves as Foreman's does, written for tftproxy's tests on Debian's
# ruby-rest-client (the HTTP library Foreman itself uses). It applies Foreman's rules, not its
# code:
#
# * every call: rest-client with a 60 s timeout, `Accept: application/json`, request and session
#   ids, and over HTTPS a client certificate and the CA to verify the proxy against;
# * the success rule: a response rest-client returns (200-207) with an empty body is true, a
#   JSON body its value, anything else false; what rest-client raises (every other status,
#   connection errors) becomes a ProxyException whose message is Foreman's
#   "ERFxx-yyyy [ProxyAPI::ProxyException]: <what> ([<class>]: <status line>) for proxy <url>";
# * registration: /v2/features, modules not "running" dropped, names Foreman knows kept with their
#   settings and capabilities (a 404 falls back to /features);
# * the version check: no warning only with the same major and a proxy minor equal to Foreman's
#   or the next one;
# * the log view: /logs/?from_timestamp=N, records counted by level, failed_modules read from
#   info (its absence is an error in Foreman's page).
#
# Input: one JSON call per line on stdin, e.g. {"call": "set", "kind": "PXELinux", "mac": "...",
# "args": {"pxeconfig": "..."}}; output: one JSON line per call, as soon as it is done:
# {"value": ...} or {"error": "<ProxyException message>", "class": "..."}.
#
#   ruby foreman_client.rb URL [--ssl-ca F --ssl-cert F --ssl-key F] [--timeout S]

require 'json'
require 'openssl'
require 'optparse'
require 'rest-client'
require 'securerandom'
require 'zlib'

# The error Foreman shows for a failed proxy call.
class ProxyException < StandardError
  def initialize(url, cause, template, *params)
    code = format('ERF%02d-%04d', Zlib.crc32('ProxyException') % 100, Zlib.crc32(template) % 10_000)
    super("#{code} [ProxyAPI::ProxyException]: #{format(template, *params)} " \
          "([#{cause.class}]: #{cause.message}) for proxy #{url}")
  end
end

# Feature names Foreman registers (its seeded features, downcased, spaces removed).
KNOWN_FEATURES = %w[templates tftp dns dhcp puppetca bmc realm facts logs httpboot
                    externalipam registration].freeze
LEVELS = %w[debug info warn error fatal].freeze

class ForemanClient
  def initialize(base, ssl: nil, timeout: 60)
    @base = base.chomp('/')
    @ssl = ssl
    @timeout = timeout
  end

  # rest-client's view of one API of the proxy ("tftp", "features", ...).
  def resource(api)
    options = { timeout: @timeout,
                headers: { accept: :json, x_request_id: SecureRandom.uuid,
                           x_session_id: SecureRandom.uuid } }
    if @ssl
      options[:ssl_client_cert] = OpenSSL::X509::Certificate.new(File.read(@ssl[:cert]))
      options[:ssl_client_key] = OpenSSL::PKey.read(File.read(@ssl[:key]))
      options[:ssl_ca_file] = @ssl[:ca]
      options[:verify_ssl] = OpenSSL::SSL::VERIFY_PEER
    end
    RestClient::Resource.new("#{@base}/#{api}", options)
  end

  # Foreman's success rule for a response rest-client returned.
  def parse(response)
    return false unless response && response.code >= 200 && response.code < 300
    return true if response.body.to_s.strip.empty?

    JSON.parse(response.body)
  rescue JSON::ParserError
    false
  end

  def guarded(api, template, *params)
    yield resource(api)
  rescue ProxyException
    raise
  rescue StandardError => e
    raise ProxyException.new("#{@base}/#{api}", e, template, *params)
  end

  # ---- ProxyAPI::TFTP

  def set(kind, mac, args)
    guarded('tftp', 'Unable to set TFTP boot entry for %s', mac) { |r| parse(r["#{kind}/#{mac}"].post(args)) }
  end

  def delete(kind, mac)
    guarded('tftp', 'Unable to delete TFTP boot entry for %s', mac) { |r| parse(r["#{kind}/#{mac}"].delete) }
  end

  def fetch_boot_file(prefix, path)
    guarded('tftp', 'Unable to fetch TFTP boot file') do |r|
      parse(r['fetch_boot_file'].post(prefix: prefix, path: path))
    end
  end

  def create_default(kind, menu)
    guarded('tftp', 'Unable to create default TFTP boot menu') do |r|
      parse(r["#{kind}/create_default"].post(menu: menu))
    end
  end

  def boot_server
    guarded('tftp', 'Unable to detect TFTP boot server') do |r|
      reply = parse(r['serverName'].get)
      reply.is_a?(Hash) && !reply['serverName'].to_s.strip.empty? ? reply['serverName'] : false
    rescue RestClient::NotFound
      nil
    end
  end

  # ---- registration, version, logs

  def features
    guarded('features', 'Unable to detect features') { |r| parse(r.get) }
  end

  def v2_features
    guarded('v2/features', 'Unable to detect features') { |r| parse(r.get) }
  end

  def version
    guarded('version', 'Unable to detect version') { |r| parse(r.get) }
  end

  # What Foreman stores for the proxy on "Refresh features": {name => {settings, capabilities}}.
  def register
    reply = begin
      v2_features
    rescue ProxyException => e
      raise unless e.message.include?('[RestClient::NotFound]')

      features.to_h { |name| [name, { 'state' => 'running' }] }
    end
    raise 'An invalid response was received while requesting available features' unless reply.is_a?(Hash)

    running = reply.select { |name, v| v.is_a?(Hash) && v['state'] == 'running' && KNOWN_FEATURES.include?(name) }
    running.transform_values { |v| { 'settings' => v['settings'] || {}, 'capabilities' => v['capabilities'] || [] } }
  end

  # Foreman's "Core and proxy versions do not match" check: the warning, or nil.
  def version_warning(foreman)
    proxy = version['version']
    f_major, f_minor = foreman.scan(/\d+/).map(&:to_i)
    p_major, p_minor = proxy.to_s.scan(/\d+/).map(&:to_i)
    return nil if f_major == p_major && p_minor && (f_minor..f_minor + 1).cover?(p_minor)

    "Core and proxy versions do not match. foreman: #{foreman}, foreman-proxy: #{proxy}"
  end

  # What Foreman's proxy page shows of the proxy's log buffer.
  def logs(from = 0)
    hash = guarded('logs', 'Unable to fetch logs') { |r| parse(r["?from_timestamp=#{from}"].get) }
    entries = hash['logs'] || []
    failed = hash['info'].fetch('failed_modules') # a missing key is an error in Foreman's page
    counts = LEVELS.to_h { |l| [l, entries.count { |e| e['level'].to_s.downcase == l }] }
    entries.each { |e| Time.at(e['timestamp']) } # the page formats each timestamp as a number
    { 'entries' => entries, 'failed_modules' => failed, 'counts' => counts, 'info' => hash['info'] }
  end
end

def run_call(client, call)
  value = case call['call']
          when 'set' then client.set(call['kind'], call['mac'], call['args'] || {})
          when 'delete' then client.delete(call['kind'], call['mac'])
          when 'fetch_boot_file' then client.fetch_boot_file(call['prefix'], call['path'])
          when 'create_default' then client.create_default(call['kind'], call['menu'])
          when 'boot_server' then client.boot_server
          when 'features' then client.features
          when 'v2_features' then client.v2_features
          when 'version' then client.version
          when 'register' then client.register
          when 'version_warning' then client.version_warning(call['foreman'])
          when 'logs' then client.logs(call['from'] || 0)
          else raise ArgumentError, "unknown call #{call['call']}"
          end
  { 'value' => value }
rescue ProxyException, RuntimeError => e
  { 'error' => e.message, 'class' => e.class.name }
end

if $PROGRAM_NAME == __FILE__
  opts = {}
  OptionParser.new do |o|
    o.on('--ssl-ca F') { |v| opts[:ca] = v }
    o.on('--ssl-cert F') { |v| opts[:cert] = v }
    o.on('--ssl-key F') { |v| opts[:key] = v }
    o.on('--timeout S', Integer) { |v| opts[:timeout] = v }
  end.parse!
  url = ARGV.fetch(0)
  abort 'only loopback proxies' unless url =~ %r{\Ahttps?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?/?\z}
  ssl = opts[:cert] ? { ca: opts[:ca], cert: opts[:cert], key: opts[:key] } : nil
  client = ForemanClient.new(url, ssl: ssl, timeout: opts[:timeout] || 60)
  $stdout.sync = true
  $stdin.each_line { |line| puts JSON.generate(run_call(client, JSON.parse(line))) }
end

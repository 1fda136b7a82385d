# syntax=docker/dockerfile:1
# Multi-stage build: compile TypeScript, then a runtime image with production dependencies only
# (no dev dependencies, no tests, no source maps), running as uid 10001 on a read-only root.
#
# The base is Node.js 24 LTS on Debian 12, pinned by digest (a rebuild gets the same base until
# this line changes). Another base can be named at build time, e.g. one that a mirror or a build
# farm keeps: `--build-arg BASE_IMAGE=registry.example/node:24-bookworm-slim@sha256:...`. The RUN
# steps need only what a Node image has: node, npm and /bin/sh.
ARG BASE_IMAGE=node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# npm's cache is a build cache, kept between builds (a cache mount). A build farm without the
# registry mounts a filled cache into the build and names it, e.g. `podman build
# --volume /var/cache/npm:/npm-cache --build-arg NPM_CACHE=/npm-cache --network none`
# (test/e2e/image.test.ts builds this way): --prefer-offline takes every package the cache holds
# from it, checked against the lockfile's integrity, and asks the registry only for the rest.
ARG NPM_CACHE=/root/.npm
RUN --mount=type=cache,id=stevedore-npm,target=/root/.npm,sharing=locked \
    npm ci --cache "$NPM_CACHE" --prefer-offline --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY lib ./lib
COPY scripts/prune-node-modules.mjs ./scripts/
# dist/ without source maps (tsconfig.build.json); node_modules without dev dependencies, and
# without the source maps and type declarations of the production ones.
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && node scripts/prune-node-modules.mjs node_modules

FROM ${BASE_IMAGE}
# MALLOC_MMAP_THRESHOLD_: NODE_ENV of lib/cli/node-flags.ts (freed buffers go back to the system).
ENV NODE_ENV=production \
    MALLOC_MMAP_THRESHOLD_=131072 \
    STEVEDORE_STORAGE_PATH=/var/lib/stevedore \
    STEVEDORE_LISTEN=0.0.0.0:5000
WORKDIR /app
# The stevedore user and group (10001) and the store it owns; node is the only tool this needs.
RUN ["node", "-e", "const fs = require('node:fs'); fs.appendFileSync('/etc/group', 'stevedore:x:10001:\\n'); fs.appendFileSync('/etc/passwd', 'stevedore:x:10001:10001:stevedore:/app:/usr/sbin/nologin\\n'); for (const d of ['/var/lib/stevedore', '/etc/stevedore']) fs.mkdirSync(d, { recursive: true }); fs.chownSync('/var/lib/stevedore', 10001, 10001);"]
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY assets ./assets
COPY package.json ./
COPY config/stevedore.yaml /etc/stevedore/stevedore.yaml
USER 10001:10001
VOLUME ["/var/lib/stevedore"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const port = (process.env.STEVEDORE_LISTEN || '').split(':').pop() || '5000'; fetch('http://127.0.0.1:' + port + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
# NODE_FLAGS of lib/cli/node-flags.ts (test/cli/node-flags.test.ts checks they are the same): the
# young generation's size and the old generation's growth, which V8 reads only from the command
# line or NODE_OPTIONS.
ENTRYPOINT ["node", "--max-semi-space-size=4", "--heap-growing-percent=20", "dist/cli/main.js"]
CMD ["serve", "--config", "/etc/stevedore/stevedore.yaml"]

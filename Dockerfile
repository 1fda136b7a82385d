# syntax=docker/dockerfile:1
# Multi-stage build: compile TypeScript, then a runtime image with production dependencies only.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY lib ./lib
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    STEVEDORE_STORAGE_PATH=/var/lib/stevedore \
    STEVEDORE_LISTEN=0.0.0.0:5000
WORKDIR /app
RUN groupadd --system --gid 10001 stevedore \
 && useradd --system --uid 10001 --gid stevedore --home-dir /app --shell /usr/sbin/nologin stevedore \
 && mkdir -p /var/lib/stevedore /etc/stevedore \
 && chown stevedore:stevedore /var/lib/stevedore
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY assets ./assets
COPY package.json ./
COPY config/stevedore.yaml /etc/stevedore/stevedore.yaml
USER stevedore
VOLUME ["/var/lib/stevedore"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["serve", "--config", "/etc/stevedore/stevedore.yaml"]

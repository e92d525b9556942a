export * from './errors.js';
export * from './limits.js';
export * from './duration.js';
export * from './names.js';
export * from './types.js';
export * from './validate.js';
export * from './sse.js';
export * from './schemas.js';
